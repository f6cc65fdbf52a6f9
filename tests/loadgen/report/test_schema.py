"""The artifact schema: a good document passes; a broken one is rejected naming the path."""
from __future__ import annotations

import copy

import pytest

from inloop.loadgen.report.schema import SCHEMA, format_path, validate


def _minimal(kind: str = "load", section: dict | None = None) -> dict:
    from tests.loadgen.report.synthetic import make_artifact

    full = make_artifact()
    doc = {k: full[k] for k in ("schema", "created", "meta")}
    doc["kind"] = kind
    doc[kind] = section if section is not None else full[kind]
    return doc


def test_good_artifact_passes(artifact):
    validate(artifact)  # raises on any problem


def test_minimal_artifact_of_each_kind_passes():
    for kind in ("matrix", "loops", "coldwarm", "load"):
        validate(_minimal(kind))


def test_extra_keys_are_allowed_for_forward_compatibility(artifact):
    artifact["meta"]["host"]["numa_nodes"] = 2
    artifact["runs"][0]["tokens_out"] = 31
    validate(artifact)


@pytest.mark.parametrize("mutate, path", [
    (lambda d: d.update(schema="inloop.loadgen/v0"), "schema"),
    (lambda d: d["meta"]["host"].pop("cores"), "meta.host.cores"),
    (lambda d: d["meta"]["host"].update(gpu=3), "meta.host.gpu"),
    (lambda d: d["runs"][3].update(latency_ms="fast"), "runs[3].latency_ms"),
    (lambda d: d["runs"][5].update(route="sideways"), "runs[5].route"),
    (lambda d: d["matrix"]["profiles"][1]["overall"]["ratio_mean"].update(ci95=[1.0, 1.1, 1.2]),
     "matrix.profiles[1].overall.ratio_mean.ci95"),
    (lambda d: d["matrix"]["profiles"][0]["families"]["kv"]["internal"].update(success_rate=1.5),
     "matrix.profiles[0].families.kv.internal.success_rate"),
    (lambda d: d["load"]["ttft_ms"].pop("p99"), "load.ttft_ms.p99"),
    (lambda d: d.pop("matrix"), "matrix"),  # kind matrix must carry its section
    (lambda d: next(iter(d["traces"].values()))[2].update(start_ns=1.5), "traces."),
    (lambda d: d.update(created="yesterday"), "created"),
])
def test_broken_artifact_names_the_path(artifact, mutate, path):
    mutate(artifact)
    with pytest.raises(ValueError) as err:
        validate(artifact)
    assert f"invalid at {path}" in str(err.value)


def test_first_bad_path_orders_list_items_by_index(artifact):
    artifact["runs"][10]["rep"] = "x"
    artifact["runs"][2]["rep"] = "y"
    with pytest.raises(ValueError, match=r"invalid at runs\[2\]\.rep"):
        validate(artifact)


def test_not_an_object_is_rejected():
    with pytest.raises(ValueError, match=r"invalid at \$"):
        validate([SCHEMA])


def test_format_path():
    assert format_path([]) == "$"
    assert format_path(["runs", 3, "latency_ms"]) == "runs[3].latency_ms"
    assert format_path(["traces", "abc", 0]) == "traces.abc[0]"


def test_validate_does_not_modify_the_document(artifact):
    before = copy.deepcopy(artifact)
    validate(artifact)
    assert artifact == before
