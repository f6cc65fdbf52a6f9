"""The package map that pyproject.toml cannot say: the repository's folders stay as they are
(proto/inloop, services, loadgen), and install as one `inloop` namespace.

    proto/inloop -> inloop           (the generated inloop.v1 protos)
    services     -> inloop.services
    loadgen      -> inloop.loadgen

Every other setting is in pyproject.toml.
"""
from setuptools import find_packages, setup

FOLDERS = {"inloop.services": "services", "inloop.loadgen": "loadgen"}

packages = ["inloop", *find_packages("proto", include=["inloop.*"])]
for namespace, folder in FOLDERS.items():
    packages += [namespace, *(f"{namespace}.{p}" for p in find_packages(folder))]

setup(packages=packages, package_dir={"inloop": "proto/inloop", **FOLDERS})
