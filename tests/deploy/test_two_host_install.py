"""The two-host install as deploy/README.md tells it, checked where a reader would trip:

- the security groups let step 5's client host reach what step 5 calls (runtime and controller);
- the loadgen's OTLP receiver does not default to the collector's 4317 on the CPU host, and the
  lab (which runs the matrix where the README says: the CPU host) uses that same default;
- the CUDA 13 wheels and base image come with the R580 driver requirement, stated;
- traces cross the VPC over mTLS like every other hop (the collector's receiver wants it);
- Kubernetes: headless Services for the gRPC backends (the clients balance round_robin), and
  the scaled tools share a durable store reachable only by them.
"""
from __future__ import annotations

import re
import tomllib

import yaml

from inloop.loadgen.harness import LOADGEN_OTLP_PORT
from inloop.loadgen.lab.config import load_config
from inloop.services.common.certs_cli import NAMES
from inloop.services.common.grpc_client import channel_options
from tests.deploy.shared_names import DEPLOY, SERVICES

README = (DEPLOY / "README.md").read_text()
# CUDA major version -> the oldest driver branch that runs it (NVIDIA's CUDA release notes).
DRIVER_BRANCH = {12: "R525", 13: "R580"}


def security_group_rules() -> list[tuple[str, str, str]]:
    """(group, port, from) for each row of step 1's table."""
    rows = re.findall(r"^\| `(inloop-\w+|both)` \| TCP (\d+) \| ([^|]+) \|", README, re.M)
    assert rows, "no security group table found"
    return [(g, p, src.strip()) for g, p, src in rows]


def test_step_5_client_host_can_reach_what_step_5_calls():
    step5 = README.split("### 5. Checks")[1].split("### 6.")[0]
    assert "From a client host" in step5 and "runtime:50051" in step5 and "controller:50071" in step5
    rules = security_group_rules()
    from_clients = {(g, p) for g, p, src in rules if "client" in src}
    assert ("inloop-gpu", str(SERVICES["runtime"].port)) in from_clients
    assert ("inloop-cpu", str(SERVICES["controller"].port)) in from_clients


def test_the_loadgen_receiver_does_not_take_the_collectors_port():
    collector = yaml.safe_load((DEPLOY / "otel/collector-split-host.yaml").read_text())
    collector_port = int(collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1])
    assert LOADGEN_OTLP_PORT != collector_port == 4317
    step7 = README.split("### 7.")[1].split("## One host")[0]
    assert "on the CPU host" in step7 and f"0.0.0.0:{LOADGEN_OTLP_PORT}" in step7 and "--otlp-listen 0.0.0.0:4317" not in step7
    # The lab runs the matrix in its CPU host, with the same receiver port as the README.
    cfg = load_config(DEPLOY / "lab" / "lab.toml")
    assert cfg.otlp_port == LOADGEN_OTLP_PORT == load_config(None).otlp_port
    assert f":{LOADGEN_OTLP_PORT}" in (DEPLOY / "lab" / "README.md").read_text()


def test_the_cuda_major_and_its_driver_branch_are_stated():
    pins = dict(line.split("==") for line in (DEPLOY / "docker/constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    major = int(pins["cuda-bindings"].split(".")[0])
    assert int(pins["nvidia-cuda-nvrtc"].split(".")[0]) == major == int(pins["nvidia-cuda-runtime"].split(".")[0])
    dockerfile = (DEPLOY / "docker/Dockerfile.runtime").read_text()
    bases = set(re.findall(r"^FROM nvidia/cuda:(\d+)\.", dockerfile, re.M))
    assert bases == {str(major)}, bases
    branch = DRIVER_BRANCH[major]
    assert f"{branch}-series" in README and branch[1:] in dockerfile  # "R580-series" / "580"
    assert "driver_version" in README  # how to check it


def test_traces_cross_hosts_over_mtls():
    assert "collector" in NAMES  # `inloop certs dev` issues the collector's certificate
    tls = yaml.safe_load((DEPLOY / "otel/collector-split-host.yaml").read_text())["receivers"]["otlp"][
        "protocols"]["grpc"]["tls"]
    assert tls["cert_file"].endswith("collector.crt") and tls["key_file"].endswith("collector.key")
    assert tls["client_ca_file"].endswith("ca.crt")  # mutual: exporters show the CA's certificates
    for name in SERVICES:
        env = (DEPLOY / "systemd" / f"{name}.env").read_text()
        assert re.search(r"^INLOOP_OTLP_ENDPOINT=https://collector:4317$", env, re.M), name
    assert "OTEL_CONFIG=collector-split-host.yaml" in README
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert "${OTEL_CONFIG:-collector.yaml}" in " ".join(compose["services"]["otel-collector"]["command"])


def k8s_objects() -> list[dict]:
    kustomization = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]
    return docs


def test_kubernetes_grpc_backends_are_headless_and_clients_round_robin():
    services = {o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == "Service"}
    for name in ("runtime", "tools"):
        assert services[name]["spec"]["clusterIP"] == "None", name
    config = dict(channel_options())["grpc.service_config"]
    assert '"round_robin"' in config


def test_kubernetes_tools_share_a_durable_store_only_they_reach():
    """The tools replicas share one Redis database; the runtime replicas (the internal route's
    kv) another database of the same Redis; no other pod reaches it."""
    objects = k8s_objects()
    config = tomllib.loads(next(o for o in objects if o["kind"] == "ConfigMap")["data"]["inloop.toml"])
    url = config["tools"]["state_redis"]
    host, port, db = re.match(r"redis://([\w.-]+):(\d+)/(\d+)$", url).groups()
    runtime_url = config["runtime"]["tool_state_redis"]
    assert runtime_url.rsplit("/", 1)[0] == url.rsplit("/", 1)[0] and runtime_url.rsplit("/", 1)[1] != db
    redis_svc = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == host)
    assert [p["port"] for p in redis_svc["spec"]["ports"]] == [int(port)]
    deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == host)
    pod = deployment["spec"]["template"]["spec"]
    assert "--appendonly" in pod["containers"][0]["args"]  # a Redis restart keeps the state
    assert any("persistentVolumeClaim" in v for v in pod["volumes"])
    policy = next(o for o in objects if o["kind"] == "NetworkPolicy"
                  and o["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == host)
    peers = [peer["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert peers == [{"app.kubernetes.io/name": "tools"}, {"app.kubernetes.io/name": "runtime"}]
