"""Per-token byte strings of a vocabulary, and the boolean masks constrained decoding uses.

Byte-level BPE (GPT-2, SmolLM2, Qwen, Llama 3) stores each token as printable characters
that stand for bytes; we map them back so that grammar checks work on real bytes, including
tokens that hold part of a UTF-8 character.
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from inloop.services.runtime.engine.json_grammar import JsonGrammar
from inloop.services.runtime.model.tokenizer import Tokenizer


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


@lru_cache(maxsize=1)
def _byte_level_tables() -> tuple[dict[int, int], "re.Pattern[str]"]:
    """(str.translate table: byte-level character -> the latin-1 character of its byte, a
    pattern matching any character that is not byte-level)."""
    table = _unicode_to_byte()
    outside = re.compile("[^" + "".join(re.escape(ch) for ch in table) + "]")
    return {ord(ch): byte for ch, byte in table.items()}, outside


class VocabMasks:
    """Built with whole-vocabulary string and numpy operations (one translate of all tokens
    joined, np.add.reduceat for the masks): ~0.3 s for Qwen's 151k tokens on one idle core,
    where a Python predicate per token took seconds."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._json: JsonGrammar | None = None
        hf = tokenizer._tok
        size = hf.get_vocab_size(with_added_tokens=True)
        special = {t.content for t in hf.get_added_tokens_decoder().values() if t.special}
        tokens = [""] * size  # by id; "" for a special token or an id the vocabulary skips
        for token, idx in hf.get_vocab(with_added_tokens=True).items():
            if idx < size and token not in special:
                tokens[idx] = token
        to_latin1, outside = _byte_level_tables()
        joined = "".join(tokens)
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=size)  # characters = bytes
        ends = np.cumsum(lengths)
        # tokens holding a character that stands for no byte: not byte-level (e.g. sentencepiece)
        other = sorted({int(np.searchsorted(ends, m.start(), side="right")) for m in outside.finditer(joined)})
        for idx in other:
            tokens[idx] = ""
        if other:
            joined = "".join(tokens)
            lengths[other] = 0
            ends = np.cumsum(lengths)
        data = joined.translate(to_latin1).encode("latin-1")
        starts = (ends - lengths).tolist()
        self.token_bytes: list[bytes | None] = [data[a:b] if a < b else None for a, b in zip(starts, ends.tolist())]
        for idx in other:  # decode the id itself; None where it is not whole UTF-8
            text = tokenizer.decode([idx], skip_special_tokens=False)
            self.token_bytes[idx] = None if "\ufffd" in text else text.encode()
        self.size = size
        # the first id of each byte string: later ids are inserted first and overwritten
        self.by_bytes: dict[bytes, int] = dict(zip(reversed(self.token_bytes), range(size - 1, -1, -1)))
        self.by_bytes.pop(None, None)
        self.max_len = max(int(lengths.max(initial=0)), max((len(self.token_bytes[i] or b"") for i in other),
                                                           default=0), 1)
        self._build_masks(np.frombuffer(data, dtype=np.uint8), lengths, other)

    def _build_masks(self, data: np.ndarray, lengths: np.ndarray, other: list[int]) -> None:
        """The four masks from per-byte tests summed per token (np.add.reduceat over the bytes)."""
        nonempty = lengths > 0
        starts = (np.cumsum(lengths) - lengths)[nonempty]

        def per_token(byte_flags: np.ndarray) -> np.ndarray:
            counts = np.zeros(self.size, dtype=np.int64)
            if len(data):
                counts[nonempty] = np.add.reduceat(byte_flags.astype(np.int64), starts)
            return counts

        not_body = per_token((data == ord('"')) | (data == ord("\\")) | (data < 0x20))
        not_digit = per_token((data < ord("0")) | (data > ord("9")))
        first = np.zeros(self.size, dtype=np.uint8)
        last = np.zeros(self.size, dtype=np.uint8)
        if len(data):
            first[nonempty] = data[starts]
            last[nonempty] = data[starts + lengths[nonempty] - 1]
        self.string_body = nonempty & (not_body == 0)                                   # may continue a JSON string
        self.string_close = nonempty & (last == ord('"')) & (not_body == 1)            # ends one: body + '"'
        self.digits = nonempty & (not_digit == 0)
        self.signed_digits = self.digits | (nonempty & (first == ord("-")) & (not_digit == 1))
        for idx in other:  # the few decoded tokens, by their definitions
            b = self.token_bytes[idx]
            if b:
                self.string_body[idx] = _is_string_body(b)
                self.string_close[idx] = _closes_string(b)
                self.digits[idx] = b.isdigit()
                self.signed_digits[idx] = b.isdigit() or (b[:1] == b"-" and (len(b) == 1 or b[1:].isdigit()))

    @property
    def json_grammar(self) -> JsonGrammar:
        """The vocabulary for JSON Schema decoding (llguidance), built on first use (~0.3 s)."""
        if self._json is None:
            tok = self._tokenizer
            eos = tok.token_id(tok.eos_token)
            self._json = JsonGrammar(tok._tok.to_str(), self.size, [eos if eos is not None else 0])
        return self._json

    def prefix_tokens(self, text: bytes) -> list[int]:
        """Token ids whose bytes are a non-empty prefix of `text`."""
        out = []
        for k in range(1, min(len(text), self.max_len) + 1):
            idx = self.by_bytes.get(text[:k])
            if idx is not None:
                out.append(idx)
        return out


# The per-token definitions the vectorized masks implement (the tests compare the two).
def _is_string_body(b: bytes) -> bool:
    return b'"' not in b and b"\\" not in b and all(x >= 0x20 for x in b)


def _closes_string(b: bytes) -> bool:
    return b.endswith(b'"') and _is_string_body(b[:-1])
