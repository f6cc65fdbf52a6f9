"""The decode GEMV's (split-K, threads) per projection shape, measured on this card rather
than guessed.

Before a decode graph is captured, each distinct projection of the model (rows, columns,
mode, norm prologue, weight type) is timed under every config the kernel takes, inside a
graph as the step launches it: every layer's matrix once, from a flushed L2, so the weights
come from DRAM as in a step (probes.time_gemv_configs). A config wins only if its results
equal the heuristic's (fp32 sums in another order) and it is faster by more than MIN_GAIN,
else the heuristic (Ops.gemv_config) stays. Choices are kept per card, driver and
GEMV source in $INLOOP_CACHE/gemv-tuning.json, so a warm start measures nothing and every
process on one machine sums in the same order. INLOOP_CUDA_GEMV_TUNE=0 keeps the heuristic.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from . import compiler
from .gemv_timing import GEMV_CONFIGS, SAME_RESULT_TOL, L2Flush, config_name, time_gemv_configs

log = logging.getLogger("inloop.cuda")
MIN_GAIN = 0.03        # a config must beat the heuristic by 3% to replace it (timing noise)
REPLAYS = 3
_GEMV_SOURCES = ("gemv.cu", "common.cuh", "ptx.cuh")


def default_path() -> Path:
    return compiler.cache_dir().parent / "gemv-tuning.json"


def describe_saved(path: Path | None = None) -> str:
    """One line on what the tuning file holds (for `inloop cuda info`)."""
    path = path or default_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"gemv tuning {path}: nothing measured yet"
    except (OSError, ValueError) as exc:
        return f"gemv tuning {path}: unreadable ({exc}); the next start measures again"
    cards = "; ".join(f"{len(v)} shape(s) for {card}" for card, v in sorted(data.items()))
    return f"gemv tuning {path}: {cards or 'nothing measured yet'}"


def enabled_by_env() -> bool:
    return os.environ.get("INLOOP_CUDA_GEMV_TUNE", "1") != "0"


def choice_key(N: int, K: int, mode: str, norm: bool, dtype: str) -> tuple:
    """What Ops.gemv looks a choice up by."""
    return (N, K, mode, norm, dtype)


def _entry(key: tuple) -> str:
    N, K, mode, norm, dtype = key
    return f"{N}x{K}:{mode}{'+norm' if norm else ''}:{dtype}"


class GemvTuner:
    def __init__(self, be, path: Path | None = None):
        self.be = be
        self.path = path or default_path()
        info = be.info
        src = hashlib.sha256(b"".join((compiler.KERNEL_DIR / n).read_bytes() for n in _GEMV_SOURCES)).hexdigest()[:16]
        self.card = (f"{info.name}|sm_{info.capability[0]}{info.capability[1]}|{info.sm_count} SMs|"
                     f"driver {info.driver_version}|pdl {int(be.pdl)}|gemv {src}")
        self.measured = 0   # projections timed by this process (0 on a warm start)
        self.seconds = 0.0
        self.report: dict[str, dict] = {}  # entry -> what was measured and chosen (this process)

    def _load(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _save(self, card_choices: dict) -> None:
        data = self._load()  # another process may have added shapes since
        data.setdefault(self.card, {}).update(card_choices)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            tmp.replace(self.path)
        except OSError as exc:  # a read-only cache costs a re-measure next start, nothing else
            log.warning("gemv tuning: cannot save %s: %s", self.path, exc)

    def tune(self, projections) -> None:
        """`projections`: (W, norm_w or None, mode) of the GEMVs a decode step launches. Fills
        be.ops.gemv_choices for every one, measuring those this card has no choice for yet
        (every layer's matrix of a shape in one graph, read once per replay as a step does)."""
        choices = self.be.ops.gemv_choices
        saved = self._load().get(self.card, {})
        groups: dict[tuple, list] = {}
        for W, norm_w, mode in projections:
            key = choice_key(*W.shape, mode, norm_w is not None, W.dtype)
            if key in choices:
                continue
            kept = saved.get(_entry(key))
            if isinstance(kept, list) and tuple(kept) in GEMV_CONFIGS:  # anything else is measured again
                choices[key] = tuple(kept)
                continue
            groups.setdefault(key, [norm_w, mode, []])[2].append(W)
        if not groups:
            return
        t0 = time.perf_counter()
        try:
            flush = L2Flush(self.be)
        except Exception as exc:  # no room for the scratch buffer: serve with the heuristic
            log.error("gemv tuning skipped, keeping the heuristic: %s: %s", type(exc).__name__, exc)
            return
        new: dict[str, list[int]] = {}
        for key, (norm_w, mode, weights) in groups.items():
            entry = _entry(key)
            try:
                heuristic, timed = time_gemv_configs(self.be, weights, norm_w, mode, replays=REPLAYS, flush=flush)
            except Exception as exc:  # serving goes on with the heuristic; the next start tries again
                log.error("gemv tuning %s failed, keeping the heuristic: %s: %s", entry, type(exc).__name__, exc)
                self.report[entry] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            ok = {cfg: t["us"] for cfg, t in timed.items() if t["max_rel_err"] <= SAME_RESULT_TOL}
            bad = sorted(config_name(*cfg) for cfg in timed if cfg not in ok)
            if bad:
                log.error("gemv tuning %s: configs %s give results unlike %s's; not used", entry, bad,
                          config_name(*heuristic))
            best = min(ok, key=ok.get)
            pick = best if ok[best] < ok[heuristic] * (1 - MIN_GAIN) else heuristic
            choices[key] = pick
            new[entry] = list(pick)
            self.measured += 1
            self.report[entry] = {"heuristic": config_name(*heuristic), "heuristic_us": round(ok[heuristic], 3),
                                  "chosen": config_name(*pick), "chosen_us": round(ok[pick], 3),
                                  "matrices": len(weights)}
        del flush
        self.seconds += time.perf_counter() - t0
        if new:
            self._save(new)
        log.info("gemv tuning: measured %d projection shape(s) in %.3fs: %s", len(new), time.perf_counter() - t0,
                 {e: f"{r['heuristic']} {r['heuristic_us']}us -> {r['chosen']} {r['chosen_us']}us"
                  for e, r in self.report.items() if e in new})
