"""The numbers of a `inloop eval bfcl` run, from its records and BFCL's verdicts, and their Markdown.

Per category and arm: BFCL accuracy (the checker's pass rate) with Wilson 95% CIs; per arm the
valid-call rate on the call categories (the reply is at least one well-formed call to an
offered function, right or wrong), latency, and the item-by-item equality of the two
unconstrained arms with every divergence and its top-2 margins.
"""
from __future__ import annotations

import statistics

from inloop.loadgen.eval.arms import ARMS, CONSTRAINED, HF, REQUIRED, UNCONSTRAINED
from inloop.loadgen.eval.bfcl_calls import is_valid_call
from inloop.loadgen.eval.ci import wilson
from inloop.loadgen.eval.equality import NEAR_TIE, first_divergence


def _pct(q: float, values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summarize(items: list[dict], records: list[dict], verdicts: list[dict], eos: set[int],
              near_tie: float = NEAR_TIE) -> dict:
    tools = {it["id"]: it["tools"] for it in items}
    categories = list(dict.fromkeys(it["category"] for it in items))
    arms = [a for a in ARMS if any(r["arm"] == a for r in records)]
    # the same items for every arm: a partial run (a budget, one side slower) scores only the
    # items that every arm answered
    common = set.intersection(*({r["id"] for r in records if r["arm"] == a} for a in arms)) if arms else set()
    left_out = sum(r["id"] not in common for r in records)
    records = [r for r in records if r["id"] in common]
    passed = {(v["arm"], v["id"]): v["valid"] for v in verdicts}
    by = {(r["arm"], r["id"]): r for r in records}
    acc, valid, latency = {}, {}, {}
    for arm in arms:
        for cat in categories + ["all"]:
            recs = [r for r in records if r["arm"] == arm and (cat == "all" or r["category"] == cat)]
            ok = sum(passed.get((arm, r["id"]), False) for r in recs)
            p = wilson(ok, len(recs))
            acc[f"{arm}|{cat}"] = {"passed": ok, "n": len(recs), "rate": p.rate, "ci95": [p.low, p.high]}
            calls = [r for r in recs if "irrelevance" not in r["category"]]
            if calls:
                k = sum(is_valid_call(r["result"], tools[r["id"]]) for r in calls)
                q = wilson(k, len(calls))
                valid[f"{arm}|{cat}"] = {"valid": k, "n": len(calls), "rate": q.rate, "ci95": [q.low, q.high]}
        ms = [r["latency_ms"] for r in records if r["arm"] == arm and not r.get("error")]
        toks = [r["completion_tokens"] for r in records if r["arm"] == arm and not r.get("error")]
        if ms:
            latency[arm] = {"n": len(ms), "mean_ms": statistics.fmean(ms), "p50_ms": _pct(0.5, ms),
                            "p90_ms": _pct(0.9, ms), "mean_completion_tokens": statistics.fmean(toks),
                            "ms_per_token": sum(ms) / max(1, sum(toks)),
                            "cut": sum(r["finish_reason"] == "length" for r in records if r["arm"] == arm)}
    equality = None
    if UNCONSTRAINED in arms and HF in arms:
        pairs = [(by[(UNCONSTRAINED, i)], by[(HF, i)]) for i in tools
                 if (UNCONSTRAINED, i) in by and (HF, i) in by and not by[(UNCONSTRAINED, i)].get("error")]
        divs = [d for a, b in pairs if (d := first_divergence(a["id"], a, b, eos, near_tie))]
        equality = {"compared": len(pairs), "equal": len(pairs) - len(divs), "near_tie_threshold": near_tie,
                    "near_ties": sum(d.near_tie for d in divs), "real": sum(not d.near_tie for d in divs),
                    "same_answer_after_divergence": sum(by[(UNCONSTRAINED, d.id)]["result"] == by[(HF, d.id)]["result"]
                                                        for d in divs),
                    "divergences": [d.__dict__ for d in divs]}
    # where the model opens no call the grammar never acts: the constrained arm must then write
    # exactly the unconstrained arm's tokens (same prompt, greedy)
    same_as_free = None
    if CONSTRAINED in arms and UNCONSTRAINED in arms:
        pairs = [(by[(CONSTRAINED, i)], by[(UNCONSTRAINED, i)]) for i in common]
        same_as_free = {"compared": len(pairs), "same_text": sum(a["text"] == b["text"] for a, b in pairs),
                        "constrained_opened_a_call": sum("<tool_call>" in a["text"] for a, _ in pairs)}
    errors = [{"arm": r["arm"], "id": r["id"], "error": r["error"]} for r in records if r.get("error")]
    return {"categories": categories, "arms": arms, "items_scored": len(common), "records_left_out": left_out, "accuracy": acc, "valid_call": valid, "latency": latency,
            "equality": equality, "constrained_vs_free": same_as_free, "errors": errors}


def _ci(cell: dict) -> str:
    if not cell or not cell["n"]:
        return "-"
    lo, hi = cell["ci95"]
    return f"{cell['rate']:.2f} [{lo:.2f}, {hi:.2f}] ({cell.get('passed', cell.get('valid'))}/{cell['n']})"


def markdown(s: dict, meta: dict) -> str:
    arms, cats = s["arms"], s["categories"]
    head = "| category | " + " | ".join(arms) + " |\n|---|" + "---|" * len(arms)
    lines = [f"# BFCL ({meta.get('bfcl_eval_version', '?')}) on {meta.get('model', '?')}", "",
             (f"Backend for our arms: {meta.get('backend', '?')}; max_tokens {meta.get('max_tokens')} "
              f"({meta.get('max_tokens_parallel')} for parallel), the same for every arm, greedy; "
              f"parallel_tool_calls on for the parallel category only; wall time {meta.get('wall_s', 0):.0f} s"
              + (f" over {len(meta['invocations_wall_s'])} invocations." if len(meta.get("invocations_wall_s", [])) > 1
                 else ".")),
             (f"Tools: our conversion of BFCL's function docs equals bfcl-eval's `convert_to_tool` on "
              f"{meta.get('schema_equal', '?')} of {meta.get('schema_items', '?')} items; prompt token ids "
              f"equal between our tokenizer and HF's on {meta.get('prompt_ids_equal', '?')} of "
              f"{meta.get('prompt_ids_checked', '?')}."), "",
             (f"Scored: the {s['items_scored']} items that every arm answered"
              + (f" ({s['records_left_out']} answers to items not answered by every arm left out)."
                 if s["records_left_out"] else ".")), "",
             "## Accuracy (BFCL AST checker pass rate, Wilson 95% CI, passed/n)", "", head]
    for cat in cats + ["all"]:
        lines.append(f"| {cat} | " + " | ".join(_ci(s["accuracy"].get(f"{a}|{cat}")) for a in arms) + " |")
    if REQUIRED in arms:
        lines += ["", (f"{REQUIRED} forces a call (tool_choice required), so it passes irrelevance (whose right "
                      "answer is no call) only where max_tokens cut its call short; its call-category scores "
                      "show what the grammar does once a call is made.")]
    lines += ["", "## Valid-call rate (at least one well-formed call to an offered function; call categories)",
              "", head]
    for cat in [c for c in cats if "irrelevance" not in c] + ["all"]:
        lines.append(f"| {cat} | " + " | ".join(_ci(s["valid_call"].get(f"{a}|{cat}")) for a in arms) + " |")
    lines += ["", "## Latency per item (client side)", "",
              "| arm | n | mean ms | p50 ms | p90 ms | mean new tokens | ms per new token | cut at max_tokens |",
              "|---|---|---|---|---|---|---|---|"]
    for a, v in s["latency"].items():
        lines.append(f"| {a} | {v['n']} | {v['mean_ms']:.0f} | {v['p50_ms']:.0f} | {v['p90_ms']:.0f} | "
                     f"{v['mean_completion_tokens']:.1f} | {v['ms_per_token']:.1f} | {v['cut']} |")
    cf = s.get("constrained_vs_free")
    if cf:
        lines += ["", (f"Ours constrained vs unconstrained: the constrained arm opened a call on "
                       f"{cf['constrained_opened_a_call']} of {cf['compared']} items; the two wrote the same text on "
                       f"{cf['same_text']} (where no call opens they must agree).")]
    eq = s["equality"]
    if eq:
        lines += ["", "## Ours unconstrained vs HF transformers, greedy, item by item", "",
                  (f"{eq['equal']} of {eq['compared']} items generated the same tokens; {eq['near_ties']} "
                   f"divergences at a near-tie (both top-2 margins < {eq['near_tie_threshold']:g}), {eq['real']} "
                   f"beyond it; {eq['same_answer_after_divergence']} of the diverging items still gave the same "
                   "BFCL result.")]
        if eq["divergences"]:
            lines += ["", "| item | step | ours token | HF token | ours margin | HF margin | near-tie |",
                      "|---|---|---|---|---|---|---|"]
            for d in eq["divergences"]:
                lines.append(f"| {d['id']} | {d['step']} | {d['ours_token']} | {d['other_token']} | "
                             f"{d['ours_margin']:.3g} | {d['other_margin']:.3g} | {'yes' if d['near_tie'] else 'no'} |")
    if s["errors"]:
        lines += ["", f"## Errors ({len(s['errors'])})", ""]
        lines += [f"- {e['arm']} {e['id']}: {e['error'][:200]}" for e in s["errors"][:30]]
    return "\n".join(lines) + "\n"
