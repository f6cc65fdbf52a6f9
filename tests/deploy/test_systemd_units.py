"""deploy/systemd: the units pass `systemd-analyze verify` and `security`, and agree with
their env files and the shared names.

verify checks the units against the real systemd parser (unknown keys, bad values, missing
executables), but it only prints warnings and still exits 0, so the test fails on any line
it prints about our units. The units name paths that exist only on an installed host
(/opt/inloop/.venv/bin/inloop, /etc/inloop/*.env), so the test lays them out in a temporary
root, with a copy of this machine's system units for the targets they pull in, and runs
`systemd-analyze verify --root=ROOT` (systemd 252 resolves unit names and ExecStart paths
inside ROOT).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.deploy.shared_names import (
    DEPLOY,
    ETC,
    INSTALL_BIN,
    SERVICES,
    TLS_DIR,
    read_env_file,
    unknown_env,
)
from tests.deploy.tooling import require_tool, run

SYSTEMD_DIR = DEPLOY / "systemd"
UNITS = {name: SYSTEMD_DIR / s.unit for name, s in SERVICES.items()}
ENV_FILES = {name: SYSTEMD_DIR / f"{name}.env" for name in SERVICES}
SYSTEM_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
MAX_EXPOSURE = 2.5   # `systemd-analyze security`: 0 = locked down, 10 = no sandboxing at all


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value in order (systemd keys may repeat, e.g. DeviceAllow=)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def seconds(value: str) -> float:
    """A systemd time span as used here: '45s', '2min', '300' (plain = seconds)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", value)
    assert match, f"unexpected time span {value!r}"
    return float(match.group(1)) * (60 if match.group(2) in ("min", "m") else 1)


def make_root(tmp_path: Path, units: dict[str, Path]) -> Path:
    """A tree that looks like an installed host to `systemd-analyze --root`."""
    root = tmp_path / "root"
    system_units = next((d for d in SYSTEM_UNIT_DIRS if (d / "sysinit.target").exists()), None)
    if system_units is None:
        pytest.skip("no system unit directory with sysinit.target on this machine")
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in units.values():
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    (root / ETC.lstrip("/")).mkdir(parents=True)
    for env in ENV_FILES.values():
        shutil.copy(env, root / ETC.lstrip("/") / env.name)
    binary = root / INSTALL_BIN.lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    return root


def verify(tmp_path: Path, units: dict[str, Path]) -> tuple[int, list[str], str]:
    """verify's exit code, the lines it printed about these units, and all it printed."""
    tool = require_tool("systemd-analyze")
    root = make_root(tmp_path, units)
    result = run([tool, "verify", f"--root={root}",
                  *(str(root / "etc/systemd/system" / u.name) for u in units.values())])
    names = tuple(u.name for u in units.values())
    about_ours = [line for line in result.stdout.splitlines() if any(n in line for n in names)]
    return result.returncode, about_ours, result.stdout


def test_systemd_analyze_verify_prints_nothing_about_the_units(tmp_path):
    returncode, about_ours, output = verify(tmp_path, UNITS)
    assert returncode == 0, output
    assert about_ours == [], "systemd-analyze verify warned:\n" + "\n".join(about_ours)


def test_verify_harness_reports_a_broken_unit(tmp_path):
    """The check above can fail: an unknown key and a bad time span are reported."""
    broken = tmp_path / "inloop-broken.service"
    text = UNITS["tools"].read_text()
    broken.write_text(text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes\nRestartSec=soon"))
    _, about_ours, output = verify(tmp_path, {"broken": broken})
    assert any("NoNewPrivilege" in line for line in about_ours), output
    assert any("soon" in line for line in about_ours), output


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_security_exposure_is_low(tmp_path, name):
    tool = require_tool("systemd-analyze")
    root = make_root(tmp_path, UNITS)
    result = run([tool, "security", "--offline=yes", f"--root={root}",
                  f"/etc/systemd/system/{SERVICES[name].unit}"])
    if "--offline" in result.stdout and "unrecognized" in result.stdout:
        pytest.skip("this systemd-analyze has no offline security analysis (systemd < 250)")
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_unit_runs_the_service_as_the_brief_says(name):
    unit = parse_unit(UNITS[name])
    service = unit["Service"]
    one = {key: values[-1] for key, values in service.items()}
    assert one["ExecStart"] == f"{INSTALL_BIN} {name} serve"
    assert one["EnvironmentFile"] == f"{ETC}/{name}.env"
    assert one["Type"] in ("exec", "simple")
    assert one.get("User") == "inloop" or one.get("DynamicUser") == "yes"
    assert one["Restart"] == "on-failure" and seconds(one["RestartSec"]) > 0
    assert one["KillSignal"] == "SIGTERM"
    # The service drains for INLOOP_GRACE_S after SIGTERM; SIGKILL must come later than that.
    grace = float(read_env_file(ENV_FILES[name])["INLOOP_GRACE_S"])
    assert seconds(one["TimeoutStopSec"]) >= grace + 10, (one["TimeoutStopSec"], grace)
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups"):
        assert one.get(key) == "yes", f"{UNITS[name].name}: {key}=yes missing"
    assert one["ProtectSystem"] == "strict"
    assert one["CapabilityBoundingSet"] == ""
    assert one["RestrictAddressFamilies"].split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_only_the_runtime_sees_the_gpu():
    runtime = parse_unit(UNITS["runtime"])["Service"]
    allowed = " ".join(runtime["DeviceAllow"])
    assert "/dev/nvidiactl" in allowed and "/dev/nvidia-uvm" in allowed and "char-nvidia-frontend" in allowed
    assert runtime["DevicePolicy"] == ["closed"]
    assert runtime.get("PrivateDevices", ["no"])[-1] != "yes", "PrivateDevices hides /dev/nvidia*"
    for name in ("tools", "controller"):
        service = parse_unit(UNITS[name])["Service"]
        assert "DeviceAllow" not in service and service["PrivateDevices"] == ["yes"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_env_file_sets_only_shared_keys(name):
    env = read_env_file(ENV_FILES[name])
    assert unknown_env(name, env) == [], f"{name}.env: not a config key of {name}"
    service = SERVICES[name]
    assert int(env["INLOOP_PORT"]) == service.port
    assert int(env["INLOOP_METRICS_PORT"]) == service.metrics_port
    assert env["INLOOP_TLS_CERT"] == f"{TLS_DIR}/{name}.crt"
    assert env["INLOOP_TLS_KEY"] == f"{TLS_DIR}/{name}.key"
    assert env["INLOOP_TLS_CA"] == f"{TLS_DIR}/ca.crt"
    assert env["INLOOP_TOKEN_FILE"] == f"{ETC}/token"
    assert "INLOOP_PLAINTEXT" not in env, "the split-host install runs with TLS"


def test_controller_dials_the_other_services_default_ports():
    env = read_env_file(ENV_FILES["controller"])
    assert env["INLOOP_RUNTIME"] == f"runtime:{SERVICES['runtime'].port}"
    assert env["INLOOP_TOOLS"] == f"tools:{SERVICES['tools'].port}"
