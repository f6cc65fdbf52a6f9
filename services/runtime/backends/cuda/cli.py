"""`inloop cuda compile` (no GPU needed) and `inloop cuda info`."""
from __future__ import annotations

import argparse
import json
import sys

DEFAULT_ARCHS = "sm_80,sm_86,sm_89,sm_90,sm_90a"


def register(subparsers) -> None:
    cuda = subparsers.add_parser("cuda", help="CUDA backend tools: compile kernels, show the device")
    sub = cuda.add_subparsers(dest="cuda_command", metavar="SUBCOMMAND")

    p = sub.add_parser("compile", help="compile every kernel with NVRTC (no GPU needed) into the cubin cache")
    p.add_argument("--arch", default=DEFAULT_ARCHS, help=f"comma-separated targets (default {DEFAULT_ARCHS})")
    p.add_argument("--no-cache", action="store_true", help="compile even where the cache has the cubin")
    p.add_argument("--verbose", action="store_true",
                   help="print registers, spills (ptxas -v) and machine-code bytes per kernel")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("info", help="the device, the driver, NVRTC, the cubin cache and the GEMV tuning file")
    p.set_defaults(func=cmd_info)
    cuda.set_defaults(func=lambda args: (cuda.print_help(), 2)[1])


def cmd_compile(args: argparse.Namespace) -> int:
    from . import compiler

    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    try:
        for a in archs:
            compiler.parse_arch(a)
    except ValueError as exc:
        print(f"inloop cuda compile: {exc}", file=sys.stderr)
        return 2
    # every file for bf16 weights, and the weight-reading files again for fp16 weights
    builds = [(path, w) for w in compiler.WEIGHT_FORMATS for path in compiler.format_files(w)]
    labels = [path.stem if w == "bf16" else f"{path.stem} (fp16 w)" for path, w in builds]
    jobs = [(path, arch, w) for path, w in builds for arch in archs]
    rows, failures = [], 0
    results = compiler.compile_many(jobs, use_cache=not args.no_cache)
    for (path, arch, w), label, r in zip(jobs, [lb for lb in labels for _ in archs], results):
        if isinstance(r, compiler.CompileError):
            failures += 1
            rows.append({"file": label, "weights": w, "arch": arch, "ok": False, "error": r.log})
            print(f"FAILED {path.name} ({w} weights) for {arch}:\n{r.log}", file=sys.stderr)
            continue
        summary = compiler.ptxas_summary(r.log)
        for name, code in compiler.code_sizes(r.cubin).items():
            summary.setdefault(name, {"registers": 0, "spill_bytes": 0, "stack_bytes": 0})["code_bytes"] = code
        rows.append({"file": label, "weights": w, "arch": arch, "ok": True, "seconds": round(r.seconds, 3),
                     "cubin_bytes": len(r.cubin), "cached": r.cached, "kernels": len(summary),
                     "spill_bytes": sum(k["spill_bytes"] for k in summary.values()), "ptxas": summary})
    if args.json:
        print(json.dumps({"nvrtc": compiler.nvrtc_version(), "cache": str(compiler.cache_dir()), "results": rows},
                         indent=2))
        return 1 if failures else 0
    print(f"NVRTC {compiler.nvrtc_version()}  cache {compiler.cache_dir()}")
    head = f"{'kernel file':<24}" + "".join(f"{a:>18}" for a in archs)
    print(head)
    print("-" * len(head))
    by_key = {(r["file"], r["arch"]): r for r in rows}
    for label in labels:
        cells = []
        for arch in archs:
            r = by_key[(label, arch)]
            if not r["ok"]:
                cells.append(f"{'FAILED':>18}")
            else:
                t = "cached" if r["cached"] else f"{r['seconds']:.2f}s"
                cells.append(f"{t + ' ' + format(r['cubin_bytes'] // 1024, ',') + 'K':>18}")
        print(f"{label:<24}" + "".join(cells))
    if args.verbose:
        for r in rows:
            if r["ok"]:
                for name, k in r["ptxas"].items():
                    print(f"  {r['arch']:<7} {name:<28} regs {k['registers']:>3}  spill {k['spill_bytes']:>4} B"
                          f"  stack {k['stack_bytes']:>4} B  code {k.get('code_bytes', 0) / 1024:6.1f} KB")
    total = sum(r.get("seconds", 0) for r in rows)
    print(f"{len(rows) - failures}/{len(rows)} compiled, {failures} failed, {total:.2f}s of NVRTC time")
    return 1 if failures else 0


def cmd_info(args: argparse.Namespace) -> int:
    from . import compiler
    from .driver import Device, cuda_available
    from .gemv_tuning import describe_saved

    print(f"NVRTC {compiler.nvrtc_version()}, supported archs {compiler.supported_archs()}")
    print(f"cubin cache {compiler.cache_dir()}")
    print(describe_saved())
    ok, reason = cuda_available()
    if not ok:
        print(f"no CUDA device: {reason}")
        return 1
    info = Device(0).info
    print(f"device 0: {info.name}, compute {info.capability[0]}.{info.capability[1]} "
          f"(build {compiler.arch_for_capability(*info.capability)}), {info.sm_count} SMs, "
          f"{info.total_memory / 2**30:.1f} GiB, driver {info.driver_version}, "
          f"max dynamic smem {info.smem_optin // 1024} KB")
    return 0
