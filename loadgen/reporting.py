"""Assemble a run's artifact (schema, kind, created, meta, its section) and write the reports.

The JSON artifact is the record of the run; the Markdown summary and the self-contained HTML
report are rendered from it (loadgen/report/), and `inloop loadgen report ARTIFACT.json`
renders them again later.
"""
from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path


def build_doc(args: argparse.Namespace, kind: str, section: dict, extra: dict | None = None, *,
              model: str = "", seeds: list[int] = (), profiles: dict | None = None) -> dict:
    from loadgen.report.schema import SCHEMA
    from loadgen.run_meta import resolve_model_dir, run_meta

    model_dir = resolve_model_dir(model) if model else None
    meta = run_meta(args, getattr(args, "backend", "") if model else "", model_dir, list(seeds), profiles,
                    model_name=None if model_dir else (model or "remote"))
    return {"schema": SCHEMA, "kind": kind,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "meta": meta, kind: section, **(extra or {})}


def finish_report(args, kind: str, section: dict, extra: dict | None, out_dir: Path, **meta) -> dict[str, Path]:
    from loadgen.report.write import write_reports

    doc = build_doc(args, kind, section, extra, **meta)
    stem = f"{kind}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    return write_reports(doc, Path(out_dir), stem)
