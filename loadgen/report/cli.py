"""`inloop loadgen report ARTIFACT.json [--out DIR]`: re-render an artifact's reports.

The runners write their reports when they finish; this command rebuilds them from the JSON
alone (after a renderer change, or for an artifact copied from another host). It validates
the artifact against the schema and writes `<stem>.json`, `<stem>.md` and `<stem>.html` into
DIR (default: the artifact's own directory), where `<stem>` is the artifact's file name
without `.json`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd(args: argparse.Namespace) -> int:
    from inloop.loadgen.report.write import write_reports

    src = Path(args.artifact)
    try:
        doc = json.loads(src.read_text(encoding="utf-8"))
    except OSError as exc:
        print(f"loadgen report: cannot read {src}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"loadgen report: {src} is not JSON: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else src.parent
    stem = src.name.removesuffix(".json")
    try:
        paths = write_reports(doc, out, stem)
    except ValueError as exc:
        print(f"loadgen report: {src}: {exc}", file=sys.stderr)
        return 1
    for kind, path in paths.items():
        print(f"{kind:5} {path}")
    return 0


def register_report(lsub) -> None:
    """Add `report` to the `inloop loadgen` sub-commands (`lsub` is their subparsers object)."""
    r = lsub.add_parser("report", help="re-render a loadgen artifact as Markdown and self-contained HTML",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("artifact", metavar="ARTIFACT.json", help="a loadgen artifact (schema inloop.loadgen/v1)")
    r.add_argument("--out", metavar="DIR", help="where to write the reports (default: next to the artifact)")
    r.set_defaults(func=_cmd)
