"""`write_reports`: one artifact → `<stem>.json`, `<stem>.md`, `<stem>.html`, side by side.

The document is validated before anything is written, so a directory never holds reports
of an artifact that does not match the schema. Each file is written to a temporary name
and renamed into place, so a reader (or a crashed run) never sees half a report.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from inloop.loadgen.report.html import render_html
from inloop.loadgen.report.markdown import render_markdown
from inloop.loadgen.report.schema import validate


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_reports(doc: dict, out_dir: str | Path, stem: str) -> dict[str, Path]:
    """Validate `doc`, then write the artifact and both reports; {"json"|"md"|"html": path}."""
    validate(doc)
    if not stem or Path(stem).name != stem:
        raise ValueError(f"stem must be a plain file name, got {stem!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "html": out / f"{stem}.html"}
    texts = {"json": json.dumps(doc, indent=1, sort_keys=False) + "\n",
             "md": render_markdown(doc), "html": render_html(doc)}
    for key, path in paths.items():
        _write_atomic(path, texts[key])
    return paths
