"""Loadgen reports: validate an artifact (schema.py) and render it as Markdown and HTML.

`write_reports(doc, out_dir, stem)` is what the runners call; `inloop loadgen report` (cli.py)
re-renders a saved artifact. The names below load on first use, so that importing the CLI
module (as `inloop --help` does) does not pay for jsonschema and the renderers.
"""
from __future__ import annotations

import importlib

_EXPORTS = {"SCHEMA": "schema", "validate": "schema", "render_markdown": "markdown",
            "render_html": "html", "write_reports": "write"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
