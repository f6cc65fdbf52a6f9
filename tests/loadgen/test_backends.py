"""`inloop loadgen backends` (loadgen/backends.py): a built-in server started and stopped by
the command, a running server given as NAME=URL, one table with the ratios to inloop, and a
backend that cannot run reported in its row without losing the others."""
from __future__ import annotations

import argparse
import json

from inloop.loadgen.backends import format_table, register_backends
from inloop.services.runtime.model.tiny import make_tiny
from tests.service_procs import runtime_process


def test_a_started_and_a_running_server_side_by_side(tmp_path, capsys):
    model = make_tiny("llama", tmp_path / "tiny")
    running = runtime_process(model, tmp_path / "rt.jsonl", "--http-port", "0")
    try:
        url = f"http://127.0.0.1:{running.wait_log('http_listening', timeout_s=30)['port']}/v1"
        parser = argparse.ArgumentParser(prog="inloop loadgen")
        register_backends(parser.add_subparsers())
        args = parser.parse_args(["backends", "--backend", "inloop", "--backend", f"same={url}",
                                  "--backend", "nonesuch", "--model", str(model), "--prompts", "4",
                                  "--warm-requests", "2", "--max-tokens", "8", "--json", str(tmp_path / "b.json")])
        assert args.func(args) == 1  # one backend could not run
    finally:
        running.stop()
    rows = {r["backend"]: r for r in json.loads((tmp_path / "b.json").read_text())["backends"]}
    started, given = rows["inloop"], rows["same"]
    assert started["start_to_healthy_s"] > 0 and "start_to_healthy_s" not in given
    for row in (started, given):
        assert row["output_tokens"] == 8 and row["load_failed"] == 0 and row["decode_tok_s"] > 0
        assert 0 < row["ttft_ms"] <= row["warm_mean_ms"]
    assert "unknown backend 'nonesuch'" in rows["nonesuch"]["error"]
    table = capsys.readouterr().out
    assert "x inloop" in table and "nonesuch" in table and "start->healthy s" in table


def test_the_table_gives_each_figure_over_inloops():
    rows = [{"backend": "inloop", "ttft_ms": 10.0, "decode_tok_s": 30.0},
            {"backend": "other", "ttft_ms": 20.0, "decode_tok_s": 90.0}]
    ratio = format_table(rows).splitlines()[3].split()
    assert ratio[:2] == ["x", "inloop"] and "2.00" in ratio and "3.00" in ratio


def test_hf_transformers_serve_started_and_measured(tmp_path):
    """HF's own server (transformers serve, a third party) as a built-in: it rejects fields it
    does not know and ends its streams without [DONE], so it gets the exact output length
    through its `generation_config` field and a stream ending in a finish_reason counts."""
    model = make_tiny("llama", tmp_path / "tiny")
    parser = argparse.ArgumentParser(prog="inloop loadgen")
    register_backends(parser.add_subparsers())
    args = parser.parse_args(["backends", "--backend", "transformers-serve", "--model", str(model),
                              "--prompts", "2", "--warm-requests", "1", "--max-tokens", "6",
                              "--start-timeout", "120", "--json", str(tmp_path / "b.json")])
    assert args.func(args) == 0
    row = json.loads((tmp_path / "b.json").read_text())["backends"][0]
    assert "error" not in row, row
    assert row["output_tokens"] == 6 and row["load_failed"] == 0 and row["start_to_healthy_s"] > 0
