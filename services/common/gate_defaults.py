"""The uncertainty gate's default threshold, as fitted on the calibration split.

`inloop loadgen calibrate-gate --write` fits it (loadgen/calibrate_gate.py) and writes
gate_calibration.json next to this file; a task that enables the gate with threshold 0
(unset) gets the fitted threshold of its statistic, and with no statistic the fitted
statistic too. The file records which model, split and cases the fit came from, and the
reports quote it.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

CALIBRATION_FILE = Path(__file__).resolve().parent / "gate_calibration.json"
STATISTICS = ("mean_logprob", "min_margin")
# Used only when no calibration file exists (a fresh checkout before the first fit):
# the statistic, and a threshold per statistic.
FALLBACK_STATISTIC = "mean_logprob"
FALLBACK_THRESHOLDS = {"mean_logprob": -1.0, "min_margin": 0.5}


@lru_cache(maxsize=1)
def calibration() -> dict:
    try:
        return json.loads(CALIBRATION_FILE.read_text())
    except (OSError, ValueError):
        return {}


def default_gate(statistic: str = "") -> tuple[str, float, str]:
    """(statistic, threshold, source) for a gate enabled without a threshold."""
    cal = calibration()
    stat = statistic or cal.get("statistic") or FALLBACK_STATISTIC
    fitted = (cal.get("fits") or {}).get(stat, {})
    if "threshold" in fitted:
        source = f"calibrated on {cal.get('answers', '?')} calibration-split answers of {cal.get('model', {}).get('name', '?')}"
        return stat, float(fitted["threshold"]), source
    return stat, FALLBACK_THRESHOLDS[stat], "built-in fallback (no calibration file)"
