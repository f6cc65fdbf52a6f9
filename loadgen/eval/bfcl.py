"""`inloop eval bfcl`: the Berkeley Function Calling Leaderboard's items and AST checker
(bfcl-eval, in its own venv: scripts/bfcl_venv.sh) through our runtime and HF transformers.

    inloop eval bfcl --model default --limit 50                     # starts our runtime (numpy)
    inloop eval bfcl --openai-url http://127.0.0.1:8080/v1 --arm ours-constrained --arm ours-unconstrained

1. .venv-bfcl runs bfcl_runner.py prepare: the first --limit items of each category, BFCL's
   own function docs, ground truth and OpenAI tools.
2. Here: our conversion of the docs (bfcl_schema) is checked against BFCL's on every item,
   and the prompt is rendered once (the model's chat template with the tools, as the runtime
   renders it); its token ids are checked against HF's tokenizer.
3. The arms (arms.py) answer every item, category by category in turn so that a partial run
   covers all of them; each answer is appended to records.jsonl at once, and a rerun with the
   same --out skips what is there (so --budget-s and a rerun finish a long run).
4. .venv-bfcl runs bfcl_runner.py check on all records; report.json and report.md follow.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from inloop.loadgen.eval.arms import (
    ARMS,
    HF,
    TOOL_CHOICE,
    GrpcArms,
    HFArm,
    Item,
    OpenAIArms,
)
from inloop.loadgen.eval.bfcl_report import markdown, summarize
from inloop.loadgen.eval.bfcl_schema import to_openai_tools

CATEGORIES = ("simple_python", "multiple", "parallel", "irrelevance")
RUNNER = Path(__file__).with_name("bfcl_runner.py")
REPO = Path(__file__).resolve().parents[2]


def bfcl_python(venv: str) -> str:
    """The venv's python: a relative --bfcl-venv is looked for here, then in the checkout."""
    py = Path(venv) / "bin" / "python"
    if not py.exists() and not Path(venv).is_absolute():
        py = REPO / venv / "bin" / "python"
    if not py.exists():
        raise SystemExit(f"no bfcl-eval venv at {py.parent.parent}: create it once with bash scripts/bfcl_venv.sh")
    return str(py)


def run_runner(py: str, *args: str) -> None:
    subprocess.run([py, str(RUNNER), *args], check=True)


def render_prompt(tokenizer, messages: list[dict], tools: list[dict]) -> str:
    """The prompt text of a chat request with tools, as Engine.render builds it."""
    from inloop.services.contract.tool_calls import with_tools_prompt

    if "tools" not in (tokenizer.chat_template or ""):
        return tokenizer.render_chat(with_tools_prompt(messages, tools))
    return tokenizer.render_chat(messages, tools=tools or None)


def interleave(items: list[Item]) -> list[Item]:
    """Category by category in turn: simple_0, multiple_0, parallel_0, irrelevance_0, simple_1, ..."""
    groups = [[it for it in items if it.category == c] for c in dict.fromkeys(it.category for it in items)]
    return [it for row in itertools.zip_longest(*groups) for it in row if it is not None]


def load_records(path: Path) -> list[dict]:
    """The records of a run, the last one per (arm, item): a failed answer is asked again by a rerun."""
    if not path.exists():
        return []
    last = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            last[(r["arm"], r["id"])] = r
    return list(last.values())


def eos_ids(model_dir: Path, tok) -> set[int]:
    """The ids that end a turn: generation_config's eos_token_id (an id or a list) and the tokenizer's."""
    path = model_dir / "generation_config.json"
    eos = json.loads(path.read_text()).get("eos_token_id") if path.exists() else None
    ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    return ids | ({tok.token_id(tok.eos_token)} - {None})


def _start_runtime(args, log_name: str):
    from inloop.loadgen.runtime_launcher import RuntimeLauncher
    from inloop.services.common.grpc_client import wait_for_serving

    rt = RuntimeLauncher(args.model, backend=args.backend, log_path=Path(args.out) / log_name).start()
    wait_for_serving(rt.target, timeout_s=300)
    return rt


def cmd_bfcl(args) -> int:
    from inloop.services.runtime.model.default_model import resolve_model
    from inloop.services.runtime.model.tokenizer import Tokenizer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    py = bfcl_python(args.bfcl_venv)
    arms = args.arm or list(ARMS)
    items_path = out / "items.json"
    if not items_path.exists():
        run_runner(py, "prepare", *[f"--category={c}" for c in args.category or CATEGORIES],
                   f"--limit={args.limit}", f"--out={items_path}")
    doc = json.loads(items_path.read_text())
    model_dir = resolve_model(args.model)
    tok = Tokenizer(model_dir)
    items, schema_equal = [], 0
    for it in doc["items"]:
        tools = to_openai_tools(it["function"])
        schema_equal += tools == it["bfcl_tools"]
        items.append(Item(it["id"], it["category"], it["messages"], tools, render_prompt(tok, it["messages"], tools),
                          args.max_tokens_parallel if "parallel" in it["category"] else args.max_tokens))
    if schema_equal != len(items):
        print(f"warning: our tool conversion differs from bfcl-eval's on {len(items) - schema_equal} items",
              file=sys.stderr)
    records_path = out / "records.jsonl"
    settings = {"model": str(model_dir), "backend": args.openai_url or args.runtime or args.backend,
                "max_tokens": args.max_tokens, "max_tokens_parallel": args.max_tokens_parallel}
    settings_path = out / "settings.json"
    if records_path.exists() and settings_path.exists() and json.loads(settings_path.read_text()) != settings:
        raise SystemExit(f"{out} holds a run with other settings ({settings_path.read_text()}): "
                         "give another --out, or the same settings to go on with it")
    settings_path.write_text(json.dumps(settings))
    done = {(r["arm"], r["id"]) for r in load_records(records_path) if not r.get("error")}
    t_start = time.perf_counter()
    runtimes, clients, hf = [], [], None
    ids_equal = ids_checked = 0
    # --concurrent: every arm in a thread of its own; started here, each of our arms gets a
    # runtime of its own (the runtime serves one request at a time), so all of them overlap
    lanes = [[a] for a in arms] if args.concurrent else [arms]
    try:
        ours = {}
        for lane in lanes:
            mine = [a for a in lane if a != HF]
            if not mine:
                continue
            if args.openai_url:
                client = OpenAIArms(args.openai_url, args.openai_model, os.environ.get("OPENAI_API_KEY", ""))
            elif args.runtime:
                client = GrpcArms(args.runtime)
            else:
                runtimes.append(_start_runtime(args, f"runtime-{len(runtimes)}.log"))
                client = GrpcArms(runtimes[-1].target)
            clients.append(client)
            ours.update({a: client for a in mine})
        if HF in arms:
            hf = HFArm(model_dir, args.threads)
            ids_checked = len(items)
            ids_equal = sum(hf.prompt_ids(it.prompt) == tok.encode(it.prompt, add_special_tokens=True) for it in items)
        lock, stop = threading.Lock(), threading.Event()
        with records_path.open("a") as f:
            threads = [threading.Thread(target=_lane, args=(lane, interleave(items), done, ours, hf, f, lock,
                                                            t_start, args.budget_s, stop)) for lane in lanes if lane]
            for t in threads:
                t.start()
            try:
                while any(t.is_alive() for t in threads):
                    for t in threads:
                        t.join(timeout=0.5)
            except KeyboardInterrupt:  # Ctrl-C: let each arm finish the answer it is on, keep them all
                print("interrupted: finishing the answers in progress; rerun with the same --out to go on",
                      file=sys.stderr)
                stop.set()
                for t in threads:
                    t.join()
    finally:
        for client in clients:
            client.close()
        for rt in runtimes:
            rt.stop()
    wall_s = time.perf_counter() - t_start
    wall_path = out / "wall.json"   # summed over the invocations that built this directory
    walls = (json.loads(wall_path.read_text()) if wall_path.exists() else []) + [round(wall_s, 1)]
    wall_path.write_text(json.dumps(walls))
    records = load_records(records_path)
    results_path = out / "results.json"
    results_path.write_text(json.dumps([{"id": r["id"], "arm": r["arm"], "result": r["result"]} for r in records]))
    run_runner(py, "check", f"--items={items_path}", f"--results={results_path}", f"--out={out / 'verdicts.json'}")
    verdicts = json.loads((out / "verdicts.json").read_text())["verdicts"]
    summary = summarize([{"id": i.id, "category": i.category, "tools": i.tools} for i in items], records,
                        verdicts, eos_ids(model_dir, tok), args.near_tie)
    meta = {"bfcl_eval_version": doc["bfcl_eval_version"], "model": model_dir.name,
            "backend": args.openai_url or f"inloop runtime gRPC ({args.backend})", "max_tokens": args.max_tokens, "max_tokens_parallel": args.max_tokens_parallel,
            "wall_s": sum(walls), "invocations_wall_s": walls, "schema_equal": schema_equal, "schema_items": len(items),
            "prompt_ids_equal": ids_equal, "prompt_ids_checked": ids_checked, "limit": args.limit,
            "concurrent": bool(args.concurrent), "threads": args.threads,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "")}
    (out / "report.json").write_text(json.dumps({"meta": meta, **summary}, indent=1))
    (out / "report.md").write_text(markdown(summary, meta))
    print((out / "report.md").read_text())
    return 0


def _lane(arms: list[str], items: list[Item], done: set, ours, hf, f, lock, t_start: float, budget_s: float,
          stop: threading.Event) -> None:
    """Answer every item with these arms in turn, appending each record as soon as it exists."""
    for item in items:
        if stop.is_set():
            return
        if budget_s and time.perf_counter() - t_start > budget_s:
            print(f"budget of {budget_s:.0f} s spent: stopping {', '.join(arms)}; rerun with the same --out to go on",
                  file=sys.stderr)
            return
        for arm in arms:
            if (arm, item.id) in done:
                continue
            rec = _answer(arm, item, ours, hf)
            with lock:
                f.write(json.dumps(rec) + "\n")
                f.flush()
            print(f"{arm:20s} {item.id:18s} {rec['latency_ms']:8.0f} ms  {rec['finish_reason']:10s} "
                  f"{str(rec['result'])[:70]!r}", file=sys.stderr, flush=True)


def _answer(arm: str, item: Item, ours, hf) -> dict:
    """One arm's answer to one item; a failed request is a record with its error (it scores as text)."""
    try:
        if arm == HF:
            return hf.unconstrained(item)
        return ours[arm].constrained(item, arm) if arm in TOOL_CHOICE else ours[arm].unconstrained(item)
    except Exception as exc:  # noqa: BLE001 - one item's failure is reported, the run goes on
        return {"id": item.id, "category": item.category, "arm": arm, "result": "", "text": "", "token_ids": [],
                "finish_reason": "error", "latency_ms": 0.0, "prompt_tokens": 0, "completion_tokens": 0,
                "margins": [], "top2": [], "error": f"{type(exc).__name__}: {exc}"}


def register(sub) -> None:
    p = sub.add_parser("bfcl", help="BFCL function-calling accuracy: ours (tools auto or required, and free) vs HF",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="model directory or 'default' (SmolLM2)")
    p.add_argument("--backend", choices=("cpu", "cuda", "auto"), default="cpu", help="our runtime's backend")
    p.add_argument("--category", action="append", choices=CATEGORIES, help=f"repeatable (default: all of {CATEGORIES})")
    p.add_argument("--limit", type=int, default=50, help="first N items of each category (0 = all; default %(default)s)")
    p.add_argument("--max-tokens", type=int, default=64, help="fixed, the same for every arm (default %(default)s; "
                                                              "one call of SmolLM2's is ~40 tokens)")
    p.add_argument("--max-tokens-parallel", type=int, default=128,
                   help="the parallel category's (default %(default)s: 2-3 calls; its first 50 items ask 2.4 on average)")
    p.add_argument("--arm", action="append", choices=ARMS, help="repeatable (default: all four)")
    p.add_argument("--runtime", default="", help="HOST:PORT of a running runtime (default: start one)")
    p.add_argument("--openai-url", default="", help="a /v1 base URL: our two arms go to this OpenAI-compatible "
                                                    "server instead (key from OPENAI_API_KEY)")
    p.add_argument("--openai-model", default="", help="its model name (default: the first of /v1/models)")
    p.add_argument("--threads", type=int, default=0, help="torch threads for the HF arm (0 = torch's default)")
    p.add_argument("--budget-s", type=float, default=0.0, help="stop answering after this many seconds "
                                                               "(0 = none); a rerun with the same --out goes on")
    p.add_argument("--concurrent", action="store_true",
                   help="every arm in a thread of its own (our arms each on a runtime of its own, HF in "
                        "this process), so they overlap; latencies are then measured side by side")
    p.add_argument("--near-tie", type=float, default=1e-4, help="top-2 margin under which a divergence is a near-tie")
    p.add_argument("--bfcl-venv", default=".venv-bfcl", help="the venv of scripts/bfcl_venv.sh")
    p.add_argument("--out", default="bfcl-out", help="output directory (records, verdicts, report)")
    p.set_defaults(func=cmd_bfcl)
