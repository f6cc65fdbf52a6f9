"""A constrained number is valid JSON whatever the model wants: a model that writes a minus
sign and then would rather close the object still gets a digit after the sign (a lone "-" was
once let through, and BFCL's forced calls came out as {"base": -, "height": -})."""
from __future__ import annotations

import json

import numpy as np
import pytest

from inloop.services.runtime.engine.constrained import _value
from inloop.services.runtime.engine.vocab_masks import VocabMasks
from inloop.services.runtime.model.tiny import make_tiny
from inloop.services.runtime.model.tokenizer import Tokenizer


class WantsMinusThenClose:
    """Greedy over a fixed wish list: '-' first, then '}' (never a digit if it had the choice)."""

    def __init__(self, masks: VocabMasks):
        self.masks, self.text = masks, b""
        self.logits = np.zeros(masks.size, np.float32)
        for rank, piece in enumerate([b"-", b"}", b".", b"7"]):
            if piece in masks.by_bytes:
                self.logits[masks.by_bytes[piece]] = 10.0 - rank

    def pick(self, allowed: np.ndarray) -> int:
        token = int(np.argmax(np.where(allowed, self.logits, -np.inf)))
        self.text += self.masks.token_bytes[token]
        return token

    def force(self, text: str) -> bool:
        self.text += text.encode()
        return True

    def remaining(self) -> int:
        return 100

    def stopped(self) -> bool:
        return False


@pytest.fixture(scope="module")
def masks(tmp_path_factory) -> VocabMasks:
    masks = VocabMasks(Tokenizer(make_tiny("llama", tmp_path_factory.mktemp("tiny"))))
    assert b"-" in masks.by_bytes and b"}" in masks.by_bytes  # what the test leans on
    return masks


@pytest.mark.parametrize("kind", ["integer", "number"])
def test_a_minus_sign_is_followed_by_a_digit(masks, kind):
    d = WantsMinusThenClose(masks)
    _value(d, {"type": kind})
    value = json.loads(d.text)
    assert isinstance(value, (int, float)) and value < 0, d.text
