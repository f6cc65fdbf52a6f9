"""deploy/compose.yaml and the observability files it mounts.

The compose file is validated against the compose-spec JSON schema (the copy that the PyPI
package check-jsonschema vendors, with its licence, so no network is needed) using
jsonschema; then the inloop services are checked against the shared names, and the mounted
collector and Grafana provisioning files against what the compose file expects of them.
"""
from __future__ import annotations

import copy
import json
import re
from importlib import resources

import jsonschema
import pytest
import yaml

from tests.deploy.shared_names import DEPLOY, REPO, SERVICES, unknown_env

COMPOSE = DEPLOY / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose_validator():
    try:
        vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        pytest.skip("check-jsonschema is not installed (pip install '.[test]'): it ships the compose-spec schema")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_errors(validator, document) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(document)]


def test_compose_matches_the_compose_spec_schema(compose, compose_validator):
    assert schema_errors(compose_validator, compose) == []


def test_schema_check_reports_a_bad_compose_file(compose, compose_validator):
    """The check above can fail: a misspelt key and a wrongly typed value are reported."""
    broken = copy.deepcopy(compose)
    broken["services"]["tools"]["healthcheck"] = {"intervall": "10s"}
    broken["services"]["controller"]["ports"] = "50071"
    errors = schema_errors(compose_validator, broken)
    assert any("intervall" in e for e in errors) and any(e.startswith("services/controller/ports") for e in errors), errors


def test_stack_has_the_services_the_brief_names(compose):
    assert set(compose["services"]) >= {"runtime", "tools", "controller", "otel-collector",
                                        "jaeger", "prometheus", "grafana"}
    assert compose["services"]["jaeger"]["image"].startswith("jaegertracing/all-in-one:")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_inloop_services_use_shared_names(compose, name):
    service = compose["services"][name]
    env = service["environment"]
    assert unknown_env(name, env) == []
    assert int(env["INLOOP_PORT"]) == SERVICES[name].port
    assert int(env["INLOOP_METRICS_PORT"]) == SERVICES[name].metrics_port
    # built from the deploy Dockerfiles, from the repository root
    build = service["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == REPO
    assert (REPO / build["dockerfile"]).is_file()
    # SIGKILL only after the service's own grace period
    stop = int(re.fullmatch(r"(\d+)s", service["stop_grace_period"]).group(1))
    assert stop >= float(env["INLOOP_GRACE_S"]) + 10


def test_controller_reaches_the_runtime_and_tools_by_service_name(compose):
    env = compose["services"]["controller"]["environment"]
    assert env["INLOOP_RUNTIME"] == f"runtime:{SERVICES['runtime'].port}"
    assert env["INLOOP_TOOLS"] == f"tools:{SERVICES['tools'].port}"
    assert set(compose["services"]["controller"]["depends_on"]) >= {"runtime", "tools"}


def test_runtime_reserves_a_gpu(compose):
    devices = compose["services"]["runtime"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_mounted_files_exist(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"


def test_collector_sends_otlp_traces_to_jaeger_and_debug(compose):
    config = yaml.safe_load((DEPLOY / "otel/collector.yaml").read_text())
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert set(pipeline["exporters"]) == {"otlp/jaeger", "debug"}
    for kind in ("receivers", "processors", "exporters"):
        for component in pipeline.get(kind, []):
            assert component in config[kind], f"pipeline names undefined {kind[:-1]} {component}"
    # the services export to the collector's service name and port
    for name in SERVICES:
        assert compose["services"][name]["environment"]["INLOOP_OTLP_ENDPOINT"] == "http://otel-collector:4317"


def test_grafana_provisioning_matches_the_dashboard(compose):
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    sources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/datasources.yaml").read_text())
    uids = {d["uid"]: d for d in sources["datasources"]}
    assert uids["prometheus"]["type"] == "prometheus" and uids["jaeger"]["type"] == "jaeger"
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/dashboards.yaml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert mounts["./grafana/dashboards"] == path
    dashboard = json.loads((DEPLOY / "grafana/dashboards/inloop-hop-overhead.json").read_text())
    used = {p["datasource"]["uid"] for p in dashboard["panels"]}
    assert used <= set(uids), f"panels use undefined datasources {used - set(uids)}"
