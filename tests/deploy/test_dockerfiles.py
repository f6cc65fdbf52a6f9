"""deploy/docker: both Dockerfiles pass hadolint with no finding at all, use pinned bases,
run as a non-root user with a gRPC health check, and their build context filters let in
exactly what the COPY lines need. constraints.txt pins every dependency within pyproject's
bounds. No image is built here (no container engine runs on the test machines).
"""
from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.shared_names import DEPLOY, INSTALL_BIN, REPO, SERVICES
from tests.deploy.tooling import require_tool, run

DOCKER = DEPLOY / "docker"
DOCKERFILES = {"runtime": DOCKER / "Dockerfile.runtime", "cpu": DOCKER / "Dockerfile.cpu"}
# The final stage(s) of each file and the service each serves.
TARGETS = {"runtime": {"runtime"}, "cpu": {"tools", "controller"}}


def hadolint(tmp_path: Path, dockerfile: Path) -> tuple[int, str]:
    """hadolint with no user or project config (HOME, XDG and cwd point at an empty dir)."""
    tool = require_tool("hadolint")
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = run([tool, "--no-color", "--failure-threshold", "style", str(dockerfile)],
                 cwd=tmp_path, env=env)
    return result.returncode, result.stdout


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(tmp_path, flavour):
    returncode, output = hadolint(tmp_path, DOCKERFILES[flavour])
    assert returncode == 0 and output.strip() == "", output


def test_hadolint_harness_reports_findings(tmp_path):
    """The check above can fail: an unpinned base and apt install are reported."""
    bad = tmp_path / "Dockerfile.bad"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    returncode, output = hadolint(tmp_path, bad)
    assert returncode != 0 and "DL3007" in output and "DL3008" in output, output


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, pending = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    result = []
    for line in joined:
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Stage name (or its index) -> its instructions, FROM first."""
    result, current = {}, None
    for instruction in instructions(path):
        if instruction[0] == "FROM":
            match = re.search(r"\bAS\s+(\S+)", instruction[1], re.IGNORECASE)
            current = result.setdefault(match.group(1) if match else str(len(result)), [])
        current.append(instruction)
    return result


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_bases_are_pinned(flavour):
    for word, args in instructions(DOCKERFILES[flavour]):
        if word != "FROM":
            continue
        image = args.split()[0]
        if ":" not in image:  # FROM an earlier stage
            continue
        _, tag = image.rsplit(":", 1)
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: pin an exact version tag"
        if flavour == "runtime":
            assert image.startswith("nvidia/cuda:") and "-runtime-" in tag, image
        else:
            assert image.startswith("python:3.11.") and "-slim" in tag, image


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_service_stages_run_unprivileged_with_health_checks(flavour):
    all_stages = stages(DOCKERFILES[flavour])
    names = list(all_stages)
    for service in TARGETS[flavour]:
        # a target stage inherits USER/ENTRYPOINT from the stages it is built FROM
        chain, stage = [], service if service in all_stages else names[-1]
        while stage in all_stages:
            chain = all_stages[stage] + chain
            stage = all_stages[stage][0][1].split()[0]
        last = {word: args for word, args in chain}
        user = last["USER"].split(":")[0]
        assert user.isdigit() and int(user) != 0, f"{service}: USER {last['USER']}"
        port = SERVICES[service].port
        assert f'"health", "127.0.0.1:{port}"' in last["HEALTHCHECK"], last["HEALTHCHECK"]
        assert INSTALL_BIN in last["HEALTHCHECK"] and INSTALL_BIN in last["ENTRYPOINT"]
        assert f'"{service}", "serve"' in last["CMD"], last["CMD"]
        exposed = {int(p) for p in re.findall(r"\d+", " ".join(a for w, a in chain if w == "EXPOSE"))}
        assert {port, SERVICES[service].metrics_port} <= exposed


def test_hadolint_ignores_are_justified():
    for path in DOCKERFILES.values():
        for line in path.read_text().splitlines():
            match = re.search(r"hadolint ignore=(\S+)(.*)", line)
            if match:
                assert len(match.group(2).strip(" -:")) >= 10, f"{path.name}: say why: {line}"


def excluded(ignore_lines: list[str], path: str) -> bool:
    """Whether a .dockerignore excludes `path` (last matching pattern wins, parents count)."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for pattern in ignore_lines:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            result = not negate
    return result


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerignore_lets_in_the_copied_sources_only(flavour):
    ignore_file = DOCKERFILES[flavour].with_name(DOCKERFILES[flavour].name + ".dockerignore")
    lines = [line.strip() for line in ignore_file.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    for word, args in instructions(DOCKERFILES[flavour]):
        if word == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
                assert not excluded(lines, source), f"COPY {source}: excluded by {ignore_file.name}"
    for private in (".venv/bin/python", "tests/conftest.py", ".git/config", "deploy/tls/ca.key",
                    "services/__pycache__/cli.cpython-311.pyc", "token"):
        assert excluded(lines, private), f"{private} would be sent to the image build"


def test_constraints_pin_every_dependency_within_its_bounds():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: not NAME==VERSION: {line}"
            pins[canonicalize_name(name)] = version.strip()
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is a dependency but not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement.specifier}"
