"""The loadgen artifact's contract: `SCHEMA` names its version, `validate` checks a document.

One JSON document per run (kind matrix | loops | coldwarm | load). Only `schema`, `kind`,
`created` and `meta` are always present; every section, `runs` and `traces` may be absent or
empty, except that a document of kind K must carry its section K. Extra keys are allowed
everywhere so that a newer writer's additions do not break an older reader; a change to a
key that is listed here is a new schema version.
"""
from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

SCHEMA = "inloop.loadgen/v1"
KINDS = ("matrix", "loops", "coldwarm", "load")
SECTIONS = ("matrix", "loops", "coldwarm", "load", "hops")

_NUM = {"type": "number"}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_RATE = {"type": "number", "minimum": 0, "maximum": 1}
_CI = {"type": "array", "items": _NUM, "minItems": 2, "maxItems": 2}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """An object whose listed keys are all required unless `required` says otherwise."""
    return {"type": "object", "properties": props,
            "required": list(props) if required is None else required}


_ESTIMATE = _obj({"value": _NUM, "ci95": _CI})
_ROUTE = _obj({"n": _INT, "mean_ms": _NUM, "p50_ms": _NUM, "p99_ms": _NUM, "success_rate": _RATE,
               "error_rate": _RATE, "retries_per_task": _NUM,
               "errors": {"type": "object", "additionalProperties": _INT}})
_CELL = _obj({"pairs": _INT, "ratio_mean": _ESTIMATE, "ratio_p99": _ESTIMATE,
              "internal": _ROUTE, "external": _ROUTE})
_STATS = _obj({k: _NUM for k in ("mean", "median", "p90", "p95", "p99", "std")})
_ROUTE_NAME = {"enum": ["internal", "external"]}

_META = _obj({
    "commit": _STR, "command": _STR,
    "host": _obj({"cpu": _STR, "cores": _INT, "gpu": {"type": ["string", "null"]}}),
    "backend": _STR,
    "model": _obj({"name": _STR, "sha256": _STR}),
    "seeds": {"type": "array", "items": _INT},
    "packages": {"type": "object", "additionalProperties": _STR},
    "profiles": {"type": "object", "additionalProperties": _STR},
    "args": {"type": "object"},
})

_MATRIX = _obj({"profiles": {"type": "array", "items": _obj(
    {"name": _STR, "description": _STR, "overall": _CELL,
     "families": {"type": "object", "additionalProperties": _CELL}})}})

_LOOPS = _obj({
    "arms": {"type": "array", "items": _obj({
        "scenario_set": {"enum": ["baseline", "stress"]}, "route": _ROUTE_NAME, "gate": _BOOL,
        "n": _INT, "success_rate": _RATE, "mean_latency_ms": _NUM, "mean_steps": _NUM})},
    "ratios": {"type": "array", "items": _obj(
        {"scenario_set": _STR, "gate": _BOOL, "ext_int_latency_ratio": _NUM})},
    "deltas": {"type": "array", "items": _obj(
        {"scenario_set": _STR, "route": _STR, "success_delta": _NUM, "ci95": _CI})},
    "gate": _obj({"statistic": _STR, "threshold": _NUM, "source": _STR}),
})

_COLDWARM = _obj({"start_to_healthy_ms": _NUM, "cold_ttft_ms": _NUM, "cold_e2e_ms": _NUM,
                  "warm": _obj({"n": _INT, "mean_ms": _NUM, "p95_ms": _NUM, "p99_ms": _NUM})})

_LOAD = _obj({
    "mode": {"enum": ["concurrency", "poisson"]},
    "concurrency": {"type": ["integer", "null"]}, "rate": {"type": ["number", "null"]},
    "completed": _INT, "failed": _INT, "duration_s": _NUM,
    "request_throughput": _NUM, "output_throughput": _NUM, "total_token_throughput": _NUM,
    "goodput": {"type": ["number", "null"]},
    "ttft_ms": _STATS, "tpot_ms": _STATS, "itl_ms": _STATS, "e2el_ms": _STATS,
})

_HOP_PARTS = ("controller_ms", "wire_ms", "model_ms", "tools_ms", "retry_ms", "other_ms")
_HOPS = _obj({"rows": {"type": "array", "items": _obj(
    {"profile": _STR, "route": _STR, "n": _INT, "end_to_end_ms": _NUM,
     **{k: _NUM for k in _HOP_PARTS}, "sum_error_pct": _NUM})}})

_RUN = _obj({"profile": _STR, "case": _STR, "family": _STR, "route": _ROUTE_NAME, "rep": _INT,
             "first": _BOOL, "ok": _BOOL, "passed": _BOOL, "error_type": _STR,
             "latency_ms": _NUM, "retries": _INT, "steps": _INT, "trace_id": _STR})

_SPAN = _obj({"trace_id": _STR, "span_id": _STR, "parent_span_id": _STR, "name": _STR,
              "service": _STR, "kind": _STR, "start_ns": _INT, "end_ns": _INT, "status": _STR,
              "attributes": {"type": "object"}})

ARTIFACT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": SCHEMA,
    "type": "object",
    "required": ["schema", "kind", "created", "meta"],
    "properties": {
        "schema": {"const": SCHEMA},
        "kind": {"enum": list(KINDS)},
        "created": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"},
        "meta": _META,
        "matrix": _MATRIX, "loops": _LOOPS, "coldwarm": _COLDWARM, "load": _LOAD, "hops": _HOPS,
        "runs": {"type": "array", "items": _RUN},
        "traces": {"type": "object", "additionalProperties": {"type": "array", "items": _SPAN}},
    },
    # A document of kind K carries section K (the other sections stay optional).
    "allOf": [{"if": {"properties": {"kind": {"const": k}}, "required": ["kind"]},
               "then": {"required": [k]}} for k in KINDS],
}

_VALIDATOR = Draft202012Validator(ARTIFACT_SCHEMA)


def format_path(path) -> str:
    """`meta.host.cores`, `runs[3].latency_ms`; `$` for the document itself."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"


def _error_path(err) -> list:
    """Where an error points; a missing key names the key itself, not its parent."""
    path = list(err.absolute_path)
    if err.validator == "required":
        missing = [k for k in err.validator_value if isinstance(err.instance, dict) and k not in err.instance]
        if missing:
            path.append(missing[0])
    return path


def validate(doc: Any) -> None:
    """Raise ValueError naming the first bad path if `doc` is not a v1 artifact.

    "First" is by path, so the message is stable from run to run: keys by name, list
    items by index (runs[2] before runs[10]), a container's own problem before its items'.
    """
    errors = list(_VALIDATOR.iter_errors(doc))
    if not errors:
        return
    err = min(errors, key=lambda e: [(0, p) if isinstance(p, int) else (1, p) for p in _error_path(e)])
    path = format_path(_error_path(err))
    message = err.message
    if err.validator == "required":
        message = f"missing required key {_error_path(err)[-1]!r}"
    raise ValueError(f"loadgen artifact ({SCHEMA}) invalid at {path}: {message}")
