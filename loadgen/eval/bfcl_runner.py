"""The bfcl-eval side of `inloop eval bfcl`: run by .venv-bfcl's python, never imported by the
project (bfcl-eval pins numpy 1.26 and imports every provider's SDK). JSON files in, JSON out.

    python bfcl_runner.py prepare --category simple_python --limit 50 --out items.json
    python bfcl_runner.py check --items items.json --results results.json --out verdicts.json

prepare: BFCL's own loader (its Python hint added to each function doc) and ground truth, the
first --limit entries of each category, with the tools that BFCL's OpenAI Completions handler
would send (`convert_to_tool`, GORILLA_TO_OPENAPI, ModelStyle.OPENAI_COMPLETIONS).

check: each result is what that handler's `_parse_query_response_FC` makes of a reply:
[{name: arguments-json}, ...] when the reply had tool calls, else the reply's text. It is
scored by BFCL's own entry evaluators (eval_runner's AST path for simple/multiple/parallel,
the relevance path for irrelevance) with the handler's own `decode_ast`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

# The checker maps dotted function names to underscores for models registered with
# underscore_to_dot (OpenAI's names allow no dots), as the tools were converted.
CHECKER_MODEL = "gpt-4o-2024-11-20-FC"


def _handler():
    from bfcl_eval.model_handler.api_inference.openai_completion import (
        OpenAICompletionsHandler,
    )

    os.environ.setdefault("OPENAI_API_KEY", "unused")  # the client is built but never called
    return OpenAICompletionsHandler(CHECKER_MODEL, 0.0, CHECKER_MODEL, True)


def prepare(categories: list[str], limit: int) -> dict:
    from importlib.metadata import version

    from bfcl_eval.constants.enums import ModelStyle
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI
    from bfcl_eval.model_handler.utils import convert_to_tool
    from bfcl_eval.utils import load_dataset_entry, load_ground_truth_entry

    items = []
    for cat in categories:
        entries = load_dataset_entry(cat)[:limit] if limit > 0 else load_dataset_entry(cat)
        truth = {} if "irrelevance" in cat else {t["id"]: t["ground_truth"] for t in load_ground_truth_entry(cat)}
        for e in entries:
            items.append({"id": e["id"], "category": cat, "messages": e["question"][0], "function": e["function"],
                          "bfcl_tools": convert_to_tool(e["function"], GORILLA_TO_OPENAPI,
                                                        ModelStyle.OPENAI_COMPLETIONS),
                          "ground_truth": truth.get(e["id"])})
    return {"bfcl_eval_version": version("bfcl-eval"), "checker_model": CHECKER_MODEL, "items": items}


def check(items: list[dict], results: list[dict]) -> list[dict]:
    from bfcl_eval.constants.enums import Language, ReturnFormat
    from bfcl_eval.eval_checker.eval_runner import (
        _evaluate_single_ast_entry,
        _evaluate_single_relevance_entry,
    )

    handler = _handler()
    by_id = {it["id"]: it for it in items}
    verdicts = []
    for r in results:
        it = by_id[r["id"]]
        prompt_entry = {"id": it["id"], "question": [it["messages"]], "function": it["function"]}
        if "irrelevance" in it["category"]:
            v = _evaluate_single_relevance_entry(handler, it["id"], r["result"], prompt_entry, CHECKER_MODEL,
                                                 it["category"])
        else:
            v = _evaluate_single_ast_entry(handler, it["id"], r["result"], it["ground_truth"], prompt_entry,
                                           CHECKER_MODEL, it["category"], Language.PYTHON, ReturnFormat.PYTHON)
        verdicts.append({"id": r["id"], "arm": r["arm"], "valid": bool(v["valid"]),
                         "error_type": v.get("error_type", ""), "error": [str(x) for x in v.get("error", [])]})
    return verdicts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare")
    pp.add_argument("--category", action="append", required=True)
    pp.add_argument("--limit", type=int, default=50)
    pp.add_argument("--out", required=True)
    pc = sub.add_parser("check")
    pc.add_argument("--items", required=True)
    pc.add_argument("--results", required=True)
    pc.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.cmd == "prepare":
        doc = prepare(a.category, a.limit)
    else:
        with open(a.items) as f:
            items = json.load(f)["items"]
        with open(a.results) as f:
            results = json.load(f)
        doc = {"verdicts": check(items, results)}
    with open(a.out, "w") as f:
        json.dump(doc, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
