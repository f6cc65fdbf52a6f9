"""Write a run's record: the JSON artifact, its Markdown summary and its HTML report.

    paths = write_run(out_dir, "load", meta, section)          # {"json", "md", "html": Path}
    paths = write_run(out_dir, "matrix", meta, section, {"runs": [...], "traces": {...}})

The JSON artifact ({"schema", "kind", "created", "meta", <kind>: section, ...}) is the record
of the run; the Markdown and the self-contained HTML are rendered from it (loadgen/report/)
and `inloop loadgen report ARTIFACT.json` renders them again later. Files are named
`<kind>-<UTC timestamp>`; a second run in the same second gets "-2", "-3", ... rather than
overwriting the first.
"""
from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from inloop.loadgen.report.schema import SCHEMA


def _claim_stem(out: Path, kind: str, now: datetime) -> str:
    base = f"{kind}-{now.strftime('%Y%m%dT%H%M%SZ')}"
    for n in range(1, 1000):
        stem = base if n == 1 else f"{base}-{n}"
        try:
            with open(out / f"{stem}.json", "x"):  # "x": never clobber a concurrent run's file
                return stem
        except FileExistsError:
            continue
    raise FileExistsError(f"{out}: too many artifacts named {base}-*")


def write_run(out_dir: str | Path, kind: str, meta: dict, section: dict, extra: dict | None = None,
              now: datetime | None = None) -> dict[str, Path]:
    from inloop.loadgen.report.write import write_reports

    now = now or datetime.now(UTC)
    doc = {"schema": SCHEMA, "kind": kind, "created": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
           "meta": meta, kind: section, **(extra or {})}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_reports(doc, out, _claim_stem(out, kind, now))


def finish_report(args: argparse.Namespace, kind: str, section: dict, extra: dict | None, out_dir: Path, *,
                  model: str = "", seeds: list[int] = (), profiles: dict | None = None) -> dict[str, Path]:
    """write_run for a command that started (or was pointed at) the services: builds `meta`,
    and says where each file went."""
    from inloop.loadgen.run_meta import resolve_model_dir, run_meta

    model_dir = resolve_model_dir(model) if model else None
    meta = run_meta(args, getattr(args, "backend", "") if model else "", model_dir, list(seeds), profiles,
                    model_name=None if model_dir else (model or "remote"))
    paths = write_run(out_dir, kind, meta, section, extra)
    for what, path in paths.items():
        print(f"wrote {what}: {path}")
    return paths
