"""write_reports and `inloop loadgen report`: three files, validated first, re-rendered from JSON."""
from __future__ import annotations

import argparse
import json

import pytest

from inloop.loadgen.report.cli import register_report
from inloop.loadgen.report.write import write_reports


def _loadgen_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inloop loadgen")
    register_report(parser.add_subparsers(dest="loadgen_command"))
    return parser


def _run_cli(*argv: str) -> int:
    args = _loadgen_parser().parse_args(["report", *argv])
    return args.func(args)


def test_write_reports_writes_json_md_html(artifact, tmp_path):
    paths = write_reports(artifact, tmp_path / "out", "matrix-1")
    assert {k: p.name for k, p in paths.items()} == {"json": "matrix-1.json", "md": "matrix-1.md",
                                                     "html": "matrix-1.html"}
    # NaN (a ratio with too few pairs for a CI) is not equal to itself: compare the JSON text
    assert json.dumps(json.loads(paths["json"].read_text()), sort_keys=True) == json.dumps(artifact, sort_keys=True)
    assert paths["md"].read_text().startswith("# inloop loadgen report: matrix")
    assert 'id="plot-latency"' in paths["html"].read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["matrix-1.html", "matrix-1.json", "matrix-1.md"]


def test_invalid_doc_writes_nothing(artifact, tmp_path):
    del artifact["meta"]["model"]
    with pytest.raises(ValueError, match="meta.model"):
        write_reports(artifact, tmp_path, "bad")
    assert list(tmp_path.iterdir()) == []


def test_stem_must_be_a_file_name(artifact, tmp_path):
    with pytest.raises(ValueError, match="stem"):
        write_reports(artifact, tmp_path, "../escape")


def test_cli_rerenders_next_to_the_artifact_or_into_out(artifact, tmp_path, capsys):
    src = tmp_path / "run7.json"
    src.write_text(json.dumps(artifact))
    assert _run_cli(str(src)) == 0
    assert (tmp_path / "run7.md").exists() and (tmp_path / "run7.html").exists()
    assert _run_cli(str(src), "--out", str(tmp_path / "elsewhere")) == 0
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["run7.html", "run7.json", "run7.md"]
    assert "run7.html" in capsys.readouterr().out


def test_cli_reports_bad_input(artifact, tmp_path, capsys):
    assert _run_cli(str(tmp_path / "missing.json")) == 2
    (tmp_path / "junk.json").write_text("{not json")
    assert _run_cli(str(tmp_path / "junk.json")) == 2
    artifact["runs"][0]["latency_ms"] = None
    (tmp_path / "bad.json").write_text(json.dumps(artifact))
    assert _run_cli(str(tmp_path / "bad.json")) == 1
    err = capsys.readouterr().err
    assert "cannot read" in err and "is not JSON" in err and "runs[0].latency_ms" in err
    assert not (tmp_path / "bad.html").exists()


def test_help_explains_the_command(capsys):
    with pytest.raises(SystemExit):
        _loadgen_parser().parse_args(["report", "--help"])
    out = capsys.readouterr().out
    assert "ARTIFACT.json" in out and "--out DIR" in out
    assert "<stem>.md" in out and "default: next to the artifact" in out


def test_inloop_loadgen_report_when_wired(artifact, tmp_path):
    """Through the top-level `inloop` parser, once loadgen.compare.register calls register_report."""
    from inloop.services.cli import build_parser

    parser = build_parser()
    loadgen = parser._subparsers._group_actions[0].choices.get("loadgen")
    if loadgen is None or "report" not in loadgen._subparsers._group_actions[0].choices:
        pytest.skip("`inloop loadgen report` is not wired into loadgen/compare.py's register yet")
    src = tmp_path / "a.json"
    src.write_text(json.dumps(artifact))
    args = parser.parse_args(["loadgen", "report", str(src)])
    assert args.func(args) == 0 and (tmp_path / "a.html").exists()
