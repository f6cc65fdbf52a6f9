"""deploy/README.md walks a person through every variant with the shared names: each file it
tells them to copy exists, and each port, health service, command and unit it must mention
is there, spelled as the services spell it.
"""
from __future__ import annotations

import re

import pytest

from tests.deploy.shared_names import DEPLOY, REPO, SERVICES

README = (DEPLOY / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_names_and_ports_of_each_service(name):
    service = SERVICES[name]
    for needle in (str(service.port), str(service.metrics_port), service.health, service.unit.removesuffix(".service"),
                   f"inloop {name} serve", f"inloop-{name}", f"{name}.env"):
        assert needle in README, f"README does not mention {needle!r}"


def test_walkthrough_steps():
    for needle in ("inloop certs dev", "inloop health", "--route internal", "--route external",
                   "inloop task run", "systemctl enable --now", "/etc/inloop/token", "/etc/inloop/tls",
                   "/opt/inloop/.venv", "security group", "docker compose", "kubectl apply -k deploy/k8s",
                   "inloop hop overhead", "OTEL_EXPORTER_OTLP_ENDPOINT", "INLOOP_OTLP_ENDPOINT"):
        assert needle in README, f"README does not mention {needle!r}"


def test_every_repository_path_it_names_exists():
    paths = set(re.findall(r"\b(deploy/[\w./-]+\w)", README))
    paths |= {"deploy/" + p for p in re.findall(r"`((?:systemd|docker|k8s|otel|prometheus|grafana)/[\w.*/-]+)`", README)}
    assert paths, "found no paths to check"
    missing = [p for p in sorted(paths)
               if not (list(REPO.glob(p)) if "*" in p else (REPO / p).exists())]
    assert missing == []
