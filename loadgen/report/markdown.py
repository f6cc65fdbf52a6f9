"""`render_markdown(doc)`: a loadgen artifact as a Markdown summary (GitHub-flavoured tables).

The summary is what a reviewer pastes into an issue: run identity first, then one heading
per section with the same tables as the HTML report (see tables.py), then each fault
profile's TOML so that the numbers can be traced back to the settings that produced them.
"""
from __future__ import annotations

from inloop.loadgen.report.stats import runs_by_cell
from inloop.loadgen.report.tables import SECTION_TITLES, Table, meta_rows, section_tables


def _cell(text: str) -> str:
    """A table cell: pipes escaped, newlines folded, so one row stays one line."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def table_markdown(table: Table) -> list[str]:
    """A GitHub table with right-aligned numeric columns, under a bold title."""
    lines = [f"**{table.title}**", "", "| " + " | ".join(_cell(c) for c in table.columns) + " |",
             "|" + "|".join("---:" if a == "r" else ":---" for a in table.align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"_{table.note}_"]
    return lines + [""]


def _meta_markdown(doc: dict) -> list[str]:
    lines = ["| | |", "|:---|:---|"]
    for label, value in meta_rows(doc):
        value = f"`{value}`" if label in ("command", "commit") and value else _cell(value)
        lines.append(f"| {label} | {value} |")
    return lines + [""]


def _profiles_markdown(doc: dict) -> list[str]:
    profiles = doc.get("meta", {}).get("profiles") or {}
    if not profiles:
        return []
    lines = ["## Profiles", ""]
    for name, toml_text in profiles.items():
        lines += [f"**{name}**", "", "```toml", toml_text.rstrip("\n"), "```", ""]
    return lines


def render_markdown(doc: dict) -> str:
    """The whole summary; sections absent from `doc` are left out."""
    traces = doc.get("traces") or {}
    n_runs = sum(len(v) for v in runs_by_cell(doc).values())
    lines = [f"# inloop loadgen report: {doc.get('kind', '?')}", "",
             f"Created {doc.get('created', '?')}; {n_runs} runs, {len(traces)} traces.", "",
             "## Run", ""] + _meta_markdown(doc)
    for key, tables in section_tables(doc):
        lines += [f"## {SECTION_TITLES[key]}", ""]
        for table in tables:
            lines += table_markdown(table)
    lines += _profiles_markdown(doc)
    return "\n".join(lines).rstrip("\n") + "\n"
