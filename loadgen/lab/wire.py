"""Where the lab's delay shows: the mean wire time of each hop, cross-host against same-host.

The matrix already splits every traced task into parts (loadgen/hop_overhead.py); its
records carry `hops.wire_ms` (the loadgen's call plus every hop's final attempt) and
`hop_rows` (one per hop, with that hop's `wire_ms`). From them, per hop of the mesh:

    loadgen -> runtime       RunTask on the internal route          cpu-host -> gpu-host
    controller -> runtime    Generate, each model hop's final try   cpu-host -> gpu-host
    loadgen -> controller    RunTask on the external route          cpu-host -> cpu-host
    controller -> tools      Tools.Call, each tool hop's final try  cpu-host -> cpu-host

(the loadgen's own call on the external route is the record's wire time minus its hops'.)
A hop that ended in an error is left out: its client gave up before the server finished,
so client minus server is not the wire. Every cross-host call pays one round trip of the
emulated delay (its request one way, its reply the other), so the cross-host mean should
exceed the same-host mean by about 2 x delay, plus the relay's own copying where it is used.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from inloop.loadgen.lab.config import LabConfig

# hop -> (from host, to host, what it measures); "gpu"/"cpu" are replaced by the namespaces.
HOPS = {
    "loadgen->runtime": ("cpu", "gpu", "RunTask, internal route"),
    "controller->runtime": ("cpu", "gpu", "Generate, final attempt of each model hop"),
    "loadgen->controller": ("cpu", "cpu", "RunTask, external route"),
    "controller->tools": ("cpu", "cpu", "Tools.Call, final attempt of each tool hop"),
}


def wire_samples(records: list[dict]) -> dict[str, list[float]]:
    """Wire times (ms) per hop from the matrix's traced records."""
    samples: dict[str, list[float]] = {hop: [] for hop in HOPS}
    for rec in records:
        parts = rec.get("hops")
        if not parts:
            continue
        if rec["route"] == "internal":   # the runtime runs the loop in process: only the call crosses
            samples["loadgen->runtime"].append(parts["wire_ms"])
            continue
        inner = 0.0
        for row in rec.get("hop_rows") or ():
            inner += row["wire_ms"]
            if row["status"] == "error" or not row["attempts"]:
                continue
            hop = "controller->runtime" if row["hop"].startswith("chat ") else "controller->tools"
            samples[hop].append(row["wire_ms"])
        samples["loadgen->controller"].append(parts["wire_ms"] - inner)
    return samples


def _summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "mean_ms": None, "median_ms": None}
    return {"n": len(values), "mean_ms": round(statistics.fmean(values), 3),
            "median_ms": round(statistics.median(values), 3)}


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def _diff(a: float | None, b: float | None) -> float | None:
    return round(a - b, 3) if a is not None and b is not None else None


def lab_section(records: list[dict], traces: dict[str, list[dict]], cfg: LabConfig, mechanism: str) -> dict:
    """The artifact's `matrix.lab`: mechanism, delay, hosts and the wire time per hop."""
    names = {"gpu": cfg.gpu_ns, "cpu": cfg.cpu_ns}
    samples = wire_samples(records)
    by_hop = {}
    for hop, (src, dst, what) in HOPS.items():
        by_hop[hop] = {"from": names[src], "to": names[dst], "cross_host": src != dst, "measures": what,
                       **_summary(samples[hop])}
    cross = [v for hop, (s, d, _) in HOPS.items() if s != d for v in samples[hop]]
    same = [v for hop, (s, d, _) in HOPS.items() if s == d for v in samples[hop]]
    spans = [s for trace in traces.values() for s in trace]
    hosts = {
        cfg.gpu_ns: {"address": cfg.gpu_addr, "services": ["runtime"]},
        cfg.cpu_ns: {"address": cfg.cpu_addr,
                     "services": ["tools", "controller", "loadgen", *(["relay"] if mechanism == "relay" else [])]},
    }
    for ns, host in hosts.items():
        host["sampled_spans"] = sum(1 for s in spans if s.get("host") == ns)
    comparison = {
        "cross_host_mean_ms": _mean(cross), "same_host_mean_ms": _mean(same),
        "excess_ms": _diff(_mean(cross), _mean(same)),
        "round_trip_ms": round(2 * cfg.delay_ms, 3),
        # The same client calling across and within the host: the cleanest pairs.
        "loadgen_excess_ms": _diff(by_hop["loadgen->runtime"]["mean_ms"], by_hop["loadgen->controller"]["mean_ms"]),
        "controller_excess_ms": _diff(by_hop["controller->runtime"]["mean_ms"],
                                      by_hop["controller->tools"]["mean_ms"]),
    }
    return {"mechanism": mechanism, "delay_ms": cfg.delay_ms, "jitter_ms": cfg.jitter_ms, "hosts": hosts,
            "wire_by_hop": by_hop, "comparison": comparison}


def _ms(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.3f}"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def summary_lines(section: dict) -> list[str]:
    """What `inloop lab run` prints after the matrix."""
    c = section["comparison"]
    head = (f"lab: {section['mechanism']}, delay {section['delay_ms']} ms ± {section['jitter_ms']} ms each way "
            f"(one round trip: {c['round_trip_ms']} ms)")
    lines = [head, f"lab: {'hop':20} {'from -> to':24} {'n':>4} {'mean ms':>8} {'median':>8}"]
    for hop, row in section["wire_by_hop"].items():
        route = f"{row['from']} -> {row['to']}"
        lines.append(f"lab: {hop:20} {route:24} {row['n']:4d} {_ms(row['mean_ms']):>8} {_ms(row['median_ms']):>8}")
    lines.append(f"lab: wire time cross-host {_ms(c['cross_host_mean_ms']).strip()} ms vs same-host "
                 f"{_ms(c['same_host_mean_ms']).strip()} ms: {_signed(c['excess_ms'])} ms "
                 f"(loadgen's calls {_signed(c['loadgen_excess_ms'])}, controller's hops "
                 f"{_signed(c['controller_excess_ms'])}; configured round trip {c['round_trip_ms']} ms)")
    hosts = ", ".join(f"{ns} {h['sampled_spans']}" for ns, h in section["hosts"].items())
    lines.append(f"lab: spans per host in the sampled traces: {hosts}")
    return lines


def add_lab_section(artifact: Path, cfg: LabConfig, mechanism: str) -> dict:
    """Compute `matrix.lab` from the matrix's artifact, print it, and rewrite the artifact and
    its Markdown/HTML reports in place (same file names)."""
    from inloop.loadgen.report.write import write_reports

    doc = json.loads(Path(artifact).read_text(encoding="utf-8"))
    section = lab_section(doc.get("runs", []), doc.get("traces", {}), cfg, mechanism)
    doc["matrix"]["lab"] = section
    write_reports(doc, Path(artifact).parent, Path(artifact).name.removesuffix(".json"))
    for line in summary_lines(section):
        print(line, flush=True)
    return section
