"""The wheel installs under the one `inloop` import namespace (setup.py maps the folders) and
carries every module and data file of services/ and loadgen/."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = ("*.cu", "*.cuh", "*.jsonl", "*.toml", "*.json", "*.proto")


def test_the_wheel_installs_only_the_inloop_namespace(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("inloop-*.whl")
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
