"""The grammar's vocabulary masks: the same masks as the per-token definitions, built in under
2 s on vocabularies of Qwen's sizes (151,643 and 248,320 byte-level tokens)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from inloop.services.runtime.engine.vocab_masks import VocabMasks, _closes_string, _is_string_body
from inloop.services.runtime.model.gguf_tokenizer import bytes_to_unicode
from inloop.services.runtime.model.tiny import CHATML_TEMPLATE, SPECIAL_TOKENS, make_tiny
from inloop.services.runtime.model.tokenizer import Tokenizer

BUDGET_S = 2.0


def _random_token(rng: np.random.Generator) -> bytes:
    """Token bytes shaped like a real vocabulary's: words, digit runs, quotes and backslashes,
    a leading '-', control bytes and pieces of UTF-8 characters."""
    kind = rng.integers(0, 8)
    n = int(rng.integers(1, 12))
    if kind == 0:
        return bytes(rng.integers(ord("0"), ord("9") + 1, n).tolist())
    if kind == 1:
        return b"-" + bytes(rng.integers(ord("0"), ord("9") + 1, n - 1).tolist())
    if kind == 2:
        return bytes(rng.integers(0, 256, n).tolist())
    if kind == 3:
        return bytes(rng.integers(ord("a"), ord("z") + 1, n).tolist()) + b'"'
    if kind == 4:
        return bytes(rng.choice([ord('"'), ord("\\"), ord(" "), 10, ord("{"), ord(":")], n).tolist())
    return bytes(rng.integers(ord(" "), ord("~") + 1, n).tolist())


def write_big_vocab(out, size: int, seed: int = 0):
    """A byte-level BPE tokenizer.json of `size` distinct tokens (no merges: the masks read the vocabulary)."""
    spell = bytes_to_unicode()
    rng = np.random.default_rng(seed)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for b in range(256):
        vocab.setdefault(spell[b], len(vocab))
    while len(vocab) < size:
        vocab.setdefault("".join(spell[b] for b in _random_token(rng)), len(vocab))
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, t in enumerate(SPECIAL_TOKENS)],
        "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                              "use_regex": True},
        "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                            "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    (out / "tokenizer.json").write_text(json.dumps(tokenizer))
    (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>",
                                                           "chat_template": CHATML_TEMPLATE}))
    return Tokenizer(out)


def _reference_masks(masks: VocabMasks, ids) -> dict[str, list[bool]]:
    """The masks from their per-token definitions."""
    out = {"string_body": [], "string_close": [], "digits": [], "signed_digits": []}
    for i in ids:
        b = masks.token_bytes[i]
        out["string_body"].append(bool(b) and _is_string_body(b))
        out["string_close"].append(bool(b) and _closes_string(b))
        out["digits"].append(bool(b) and b.isdigit())
        out["signed_digits"].append(bool(b) and (b.isdigit() or (b[:1] == b"-" and (len(b) == 1 or b[1:].isdigit()))))
    return out


def test_masks_equal_their_definitions_on_a_real_tokenizer(tmp_path):
    tok = Tokenizer(make_tiny("llama", tmp_path / "tiny"))
    masks = VocabMasks(tok)
    ids = range(masks.size)
    for name, expected in _reference_masks(masks, ids).items():
        assert getattr(masks, name).tolist() == expected, name
    assert masks.token_bytes[tok.token_id("<|im_start|>")] is None  # special: never a grammar byte
    assert masks.digits.any() and masks.string_close.any()


@pytest.mark.parametrize("size", [151_643, 248_320])
def test_large_vocabulary_masks_build_fast(size, tmp_path):
    tok = write_big_vocab(tmp_path / "big", size)
    wall, cpu = time.perf_counter(), time.process_time()
    masks = VocabMasks(tok)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"VocabMasks over {size} tokens: {cpu:.3f} s of CPU, {wall:.3f} s wall")
    assert masks.size == size
    # CPU time: the machine running the tests is shared, and its wall clock counts the others' work
    assert cpu < BUDGET_S, f"{cpu:.2f} s of CPU to build the masks of {size} tokens"
    sample = np.random.default_rng(1).choice(size, 20_000, replace=False)
    for name, expected in _reference_masks(masks, sample).items():
        assert getattr(masks, name)[sample].tolist() == expected, name
    # each mask is non-trivial on this vocabulary, so equality above could fail
    assert all(0 < getattr(masks, name).sum() < size for name in ("string_body", "string_close", "digits",
                                                                  "signed_digits"))
