"""The wheel installs under the one `inloop` import namespace (setup.py maps the folders) and
carries every module and data file of services/ and loadgen/."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = ("*.cu", "*.cuh", "*.jsonl", "*.toml", "*.json", "*.proto")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(out), str(REPO)],
                   check=True, capture_output=True, cwd=out)
    (built,) = out.glob("inloop-*.whl")
    return built


def test_the_wheel_installs_only_the_inloop_namespace(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"inloop"}, top
    expected = {f"inloop/{p.relative_to(REPO).as_posix()}"
                for folder in ("services", "loadgen") for pattern in ("*.py", *DATA)
                for p in (REPO / folder).rglob(pattern) if "__pycache__" not in p.parts}
    expected |= {f"inloop/{p.relative_to(REPO / 'proto/inloop').as_posix()}"
                 for pattern in ("*.py", *DATA) for p in (REPO / "proto/inloop").rglob(pattern)}
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)[:10]}"
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "inloop = inloop.services.cli:main" in entry


def test_inloop_bench_from_an_installed_wheel_says_it_needs_a_checkout(wheel, tmp_path):
    """The benchmarks stay in the checkout's bench/; the installed command explains that."""
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
                    "--target", str(site), str(wheel)], check=True, capture_output=True)
    run = subprocess.run([sys.executable, "-c", "from inloop.services.cli import main; main()", "bench", "runtime"],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True)
    assert run.returncode == 2 and "not in the installed package" in run.stderr, run.stderr
    helped = subprocess.run([sys.executable, "-c", "from inloop.services.cli import main; main()", "bench", "--help"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True)
    text = " ".join(helped.stdout.split())
    assert "Run them from a checkout" in text and "bench/" in text


def test_inloop_bench_from_the_checkout_registers_the_benchmark():
    run = subprocess.run([sys.executable, "-m", "inloop.services.cli", "bench", "runtime", "--help"],
                         cwd="/", capture_output=True, text=True, check=True)
    assert "--backend" in run.stdout and "HF" in run.stdout
