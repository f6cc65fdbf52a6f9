"""deploy/k8s: every manifest passes the Kubernetes OpenAPI schemas (kubernetes-validate ships
them; strict mode rejects unknown fields), and the objects agree with each other and with the
shared names: ports, gRPC health probes, the GPU request, the HPAs' targets, the
NetworkPolicy's rules and the TOML in the ConfigMap.
"""
from __future__ import annotations

import tomllib

import pytest
import yaml

from tests.deploy.shared_names import COMMON_KEYS, DEPLOY, SERVICES, allowed_keys

K8S = DEPLOY / "k8s"
# The oldest Kubernetes still commonly run, and the newest the validator knows.
OLDEST = "1.30.0"


@pytest.fixture(scope="module")
def validator():
    return pytest.importorskip("kubernetes_validate", reason="pip install '.[test]' (kubernetes-validate)")


@pytest.fixture(scope="module")
def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


@pytest.fixture(scope="module")
def objects(kustomization) -> list[dict]:
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def find(objects, kind, name):
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def container(objects, name):
    return find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def test_kustomization_lists_every_manifest(kustomization):
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk


def test_manifests_pass_the_kubernetes_schemas(validator, objects):
    versions = sorted({OLDEST, validator.latest_version()})
    failures = []
    for obj in objects:
        for version in versions:
            try:
                validator.validate(obj, version, strict=True)
            except validator.ValidationError as exc:
                failures.append(f"{obj['kind']}/{obj['metadata']['name']} @ {version}: {exc.message}")
    assert failures == []


def test_schema_check_reports_a_bad_manifest(validator, objects):
    """The check above can fail: a misspelt probe field is rejected in strict mode."""
    broken = yaml.safe_load(yaml.safe_dump(find(objects, "Deployment", "runtime")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["servce"] = "x"
    with pytest.raises(validator.ValidationError):
        validator.validate(broken, validator.latest_version(), strict=True)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_deployment_ports_and_grpc_probes(objects, name):
    service = SERVICES[name]
    c = container(objects, name)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    http = {"http": service.http_port} if service.http_port else {}
    assert ports == {"grpc": service.port, "metrics": service.metrics_port, **http}
    assert c["readinessProbe"]["grpc"] == {"port": service.port, "service": service.health}
    assert c["livenessProbe"]["grpc"]["port"] == service.port
    assert c["args"] == [name, "serve"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    svc = find(objects, "Service", name)
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == ports
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": name}


def test_runtime_requests_one_gpu_and_others_none(objects):
    resources = container(objects, "runtime")["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    for name in ("tools", "controller"):
        assert "nvidia.com/gpu" not in str(container(objects, name)["resources"])


@pytest.mark.parametrize("name", ["tools", "controller"])
def test_hpa_scales_its_deployment(objects, name):
    hpa = find(objects, "HorizontalPodAutoscaler", name)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    # a CPU utilisation target needs a CPU request to measure against
    assert container(objects, name)["resources"]["requests"]["cpu"]


def selected(policy, name) -> bool:
    selector = policy["spec"]["podSelector"]
    if selector.get("matchLabels", {}).get("app.kubernetes.io/name") == name:
        return True
    return any(e["key"] == "app.kubernetes.io/name" and e["operator"] == "In" and name in e["values"]
               for e in selector.get("matchExpressions", []))


def peers_for_port(objects, name, port_name):
    """Pod label selectors allowed to reach `port_name` on `name`'s pods; None = anyone."""
    peers = []
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        if not selected(policy, name):
            continue
        for rule in policy["spec"].get("ingress", []):
            if any(p.get("port") in (port_name, None) for p in rule.get("ports", [{}])):
                if "from" not in rule:
                    return None
                peers += [peer.get("podSelector", {}).get("matchLabels") for peer in rule["from"]]
    return peers


@pytest.mark.parametrize("name", ["runtime", "tools"])
def test_only_the_controller_reaches_runtime_and_tools(objects, name):
    assert peers_for_port(objects, name, "grpc") == [{"app.kubernetes.io/name": "controller"}]
    assert peers_for_port(objects, name, "metrics") == [{"app.kubernetes.io/name": "prometheus"}]


def test_every_service_has_a_network_policy(objects):
    for name in SERVICES:
        assert any(selected(p, name) for p in objects if p["kind"] == "NetworkPolicy"), name


@pytest.fixture(scope="module")
def toml_config(objects) -> dict:
    return tomllib.loads(find(objects, "ConfigMap", "inloop-config")["data"]["inloop.toml"])


def test_configmap_toml_uses_shared_keys(toml_config):
    assert set(toml_config) <= {"common", *SERVICES}
    assert set(toml_config["common"]) <= COMMON_KEYS
    for name in SERVICES:
        table = toml_config[name]
        assert set(table) <= allowed_keys(name), f"[{name}]: {set(table) - allowed_keys(name)}"
        assert table["port"] == SERVICES[name].port
        assert table["metrics_port"] == SERVICES[name].metrics_port
    assert toml_config["controller"]["runtime"] == f"runtime:{SERVICES['runtime'].port}"
    assert toml_config["controller"]["tools"] == f"tools:{SERVICES['tools'].port}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_pods_read_the_config_token_and_tls_from_etc_inloop(objects, toml_config, name):
    spec = find(objects, "Deployment", name)["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["INLOOP_CONFIG"] == "/etc/inloop/inloop.toml"
    assert toml_config["common"]["token_file"] == "/etc/inloop/token"
    volume = next(v for v in spec["volumes"] if v["name"] == "etc-inloop")
    paths = {item["path"]: src for src in volume["projected"]["sources"]
             for kind in ("configMap", "secret") if kind in src for item in src[kind]["items"]}
    assert paths["inloop.toml"]["configMap"]["name"] == "inloop-config"
    assert paths["token"]["secret"]["name"] == "inloop-token"
    for path in ("tls/ca.crt", f"tls/{name}.crt", f"tls/{name}.key"):
        assert paths[path]["secret"]["name"] == "inloop-tls"
    # the pod gets SIGKILL only after the service's own grace period
    grace = toml_config[name].get("grace_s", toml_config["common"].get("grace_s", 5))
    assert spec["terminationGracePeriodSeconds"] >= grace + 10
