"""Item-by-item equality of two greedy generations of the same prompt (ours vs HF transformers).

Greedy answers of two correct implementations agree token for token except where the top two
candidates are so close that float32 rounding (a different summation order in a matmul) picks
the other one. So a divergence is reported with the top-1/top-2 probability margin at the
step where it happens, on both sides; it is a near-tie when both margins are under the
threshold (1e-4 by default), and a real difference otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

NEAR_TIE = 1e-4


@dataclass(frozen=True)
class Divergence:
    id: str
    step: int                 # index of the first generated token that differs
    ours_token: int | None    # None: that side had already stopped
    other_token: int | None
    ours_margin: float        # p(top-1) - p(top-2) at that step (nan when not reported)
    other_margin: float
    near_tie: bool


def _strip_eos(ids: list[int], eos: set[int]) -> list[int]:
    return ids[:-1] if ids and ids[-1] in eos else ids


def first_divergence(item_id: str, ours: dict, other: dict, eos: set[int],
                     near_tie: float = NEAR_TIE) -> Divergence | None:
    """None when both generated the same tokens (a final EOS on either side ignored: one
    server reports it and the other does not); else where and how close it was."""
    a, b = _strip_eos(ours["token_ids"], eos), _strip_eos(other["token_ids"], eos)
    if a == b:
        return None
    step = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    def margin(rec: dict) -> float:
        m = rec.get("margins") or []
        return float(m[step]) if step < len(m) else float("nan")

    ours_m, other_m = margin(ours), margin(other)
    tie = not (math.isnan(ours_m) or math.isnan(other_m)) and max(ours_m, other_m) < near_tie
    return Divergence(item_id, step, a[step] if step < len(a) else None, b[step] if step < len(b) else None,
                      ours_m, other_m, tie)
