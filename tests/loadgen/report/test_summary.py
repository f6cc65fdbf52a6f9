"""`inloop loadgen summary DIR`: every result of a directory on one page, the claims that
hold apart from the noise."""
from __future__ import annotations

import json

from inloop.loadgen.report.summary import write_summary
from inloop.loadgen.report.write import write_reports
from tests.loadgen.report.synthetic import make_artifact


def test_one_page_over_a_directory_with_claims_first(tmp_path):
    doc = make_artifact(n_profiles=3, runs_per_cell=12)
    write_reports(doc, tmp_path, "matrix-20261207T120000Z")
    (tmp_path / "backends.json").write_text(json.dumps({"kind": "backends", "backends": [
        {"backend": "inloop", "start_to_healthy_s": 1.3, "ttft_ms": 113.0, "decode_tok_s": 38.3,
         "load_output_tok_s": 33.6, "load_ttft_median_ms": 1049.0},
        {"backend": "llama-server", "error": "RuntimeError: no binary"}]}))
    (tmp_path / "notes.json").write_text("[1, 2]")  # not a result: ignored
    paths = write_summary(tmp_path)
    md = paths["md"].read_text()
    assert md.index("Claims that hold") < md.index("Routing matrix (matrix-20261207T120000Z.json)")
    # p02 is 2.4x slower on the external route in the synthetic runs: a claim that holds
    holds = md[md.index("**Claims that hold**"):md.index("**Noise")]
    assert "p02: external/internal mean latency over all pairs" in holds and "internal faster" in holds
    # per family there are 4 pairs: nothing from them is claimed; the backends table shows the error
    assert "| llama-server | error: RuntimeError: no binary |" in md and "| inloop | 1.30 s | 113 ms | 38.3 |" in md
    assert "backends: backends.json" in md and "notes.json" not in md
    html = paths["html"].read_text()
    assert html.startswith("<!DOCTYPE html>") and "Claims that hold" in html and "http://" not in html.split("</head>")[1]


def test_an_empty_directory_says_so(tmp_path, capsys):
    import argparse

    from inloop.loadgen.report.summary import register_summary

    parser = argparse.ArgumentParser()
    register_summary(parser.add_subparsers())
    args = parser.parse_args(["summary", str(tmp_path)])
    assert args.func(args) == 2 and "no loadgen results" in capsys.readouterr().err
