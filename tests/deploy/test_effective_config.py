"""Every deploy variant's settings, resolved by the services' own config code.

`inloop config show` resolves flag > env > TOML [service] > TOML [common] > default with the
real `inloop SERVICE serve` parsers (services.common.config_cli.effective_config). Feeding it
what systemd (env file), compose (environment + the image's ENV) and Kubernetes (the
ConfigMap's TOML + the image's ENV) give each service proves that every variable and key is
one the service reads, that every value has the right type, and that the result is what the
variant means: the shared ports, the TLS/token files, and a bind the services accept (a
non-loopback address needs all three TLS files or an explicit plaintext, never both).
"""
from __future__ import annotations

import re

import pytest
import yaml

from inloop.services.common.config_cli import effective_config
from inloop.services.common.security import is_loopback
from tests.deploy.shared_names import DEPLOY, ETC, SERVICES, TLS_DIR, read_env_file

IMAGE_OF = {"runtime": "Dockerfile.runtime", "tools": "Dockerfile.cpu", "controller": "Dockerfile.cpu"}
INTERPOLATION = re.compile(r"\$\{(\w+):-([^}]*)\}")


def image_env(name: str) -> dict[str, str]:
    """The INLOOP_* variables the service's Dockerfile sets (its ENV lines; comments skipped)."""
    lines = (DEPLOY / "docker" / IMAGE_OF[name]).read_text().splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    return dict(re.findall(r"\b(INLOOP_[A-Z_]+)=(\S+)", code))


def check_bind(values: dict) -> None:
    """The services' rule (services.common.security.ServerSecurity.check_bind), on values only."""
    tls = [values[k] for k in ("tls_cert", "tls_key", "tls_ca")]
    assert all(tls) or not any(tls), f"TLS needs all three files: {tls}"
    assert not (all(tls) and values["plaintext"]), "TLS files and plaintext both set"
    assert all(tls) or values["plaintext"] or is_loopback(values["host"]), \
        f"{values['host']}: a non-loopback bind needs TLS or plaintext"


def expect_shared(name: str, values: dict) -> None:
    assert values["port"] == SERVICES[name].port
    assert values["metrics_port"] == SERVICES[name].metrics_port
    check_bind(values)
    if name == "controller":
        assert values["runtime"] == f"runtime:{SERVICES['runtime'].port}"
        assert values["tools"] == f"tools:{SERVICES['tools'].port}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_systemd_env_file(name):
    env = read_env_file(DEPLOY / "systemd" / f"{name}.env")
    values, sources = effective_config(name, [], env=env)
    expect_shared(name, values)
    from_env = {key for key, source in sources.items() if source.startswith("env ")}
    assert {v.removeprefix("INLOOP_").lower() for v in env if v.startswith("INLOOP_")} - {"cache"} <= from_env
    assert values["tls_cert"] == f"{TLS_DIR}/{name}.crt" and values["token_file"] == f"{ETC}/token"
    # Traces take mTLS like every other hop: the runtime's cross the VPC to the collector.
    assert values["otlp_endpoint"] == "https://collector:4317"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_environment(name):
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    env = image_env(name)
    for key, value in compose["services"][name]["environment"].items():
        env[key] = INTERPOLATION.sub(lambda m: m.group(2), str(value))  # compose's ${VAR:-default}
    values, _ = effective_config(name, [], env=env)
    expect_shared(name, values)
    assert values["plaintext"] is True and values["host"] == "0.0.0.0"
    assert values["token_file"] == "/var/lib/inloop/token"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_kubernetes_configmap(name, tmp_path):
    docs = yaml.safe_load_all((DEPLOY / "k8s" / "configmap.yaml").read_text())
    config = tmp_path / "inloop.toml"
    config.write_text(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["inloop.toml"])
    values, sources = effective_config(name, [], env={**image_env(name), "INLOOP_CONFIG": str(config)})
    expect_shared(name, values)
    assert sources["port"].endswith(f"[{name}]")
    assert values["token_file"] == f"{ETC}/token"
    assert values["grace_s"] > 0


def test_image_env_is_read_from_the_dockerfiles():
    assert image_env("runtime")["INLOOP_HOST"] == "0.0.0.0"
    assert image_env("tools")["INLOOP_HOST"] == "0.0.0.0"
