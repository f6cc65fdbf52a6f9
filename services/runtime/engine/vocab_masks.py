"""Per-token byte strings of a vocabulary, and the boolean masks constrained decoding uses.

Byte-level BPE (GPT-2, SmolLM2, Qwen, Llama 3) stores each token as printable characters
that stand for bytes; we map them back so that grammar checks work on real bytes, including
tokens that hold part of a UTF-8 character.
"""
from __future__ import annotations

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


class VocabMasks:
    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._json: JsonGrammar | None = None
        hf = tokenizer._tok
        size = hf.get_vocab_size(with_added_tokens=True)
        table = _unicode_to_byte()
        special = {t.content for t in hf.get_added_tokens_decoder().values() if t.special}
        self.token_bytes: list[bytes | None] = [None] * size
        for token, idx in hf.get_vocab(with_added_tokens=True).items():
            if idx >= size or token in special:
                continue
            if all(ch in table for ch in token):
                self.token_bytes[idx] = bytes(table[ch] for ch in token)
            else:  # not byte-level (e.g. a sentencepiece vocab): decode the id itself
                text = tokenizer.decode([idx], skip_special_tokens=False)
                self.token_bytes[idx] = None if "\ufffd" in text else text.encode()
        self.size = size
        self.by_bytes: dict[bytes, int] = {}
        for idx, b in enumerate(self.token_bytes):
            if b and b not in self.by_bytes:
                self.by_bytes[b] = idx
        self.max_len = max((len(b) for b in self.token_bytes if b), default=1)
        self.string_body = self._mask(_is_string_body)     # may continue a JSON string
        self.string_close = self._mask(_closes_string)     # ends a JSON string: body + '"'
        self.digits = self._mask(lambda b: b.isdigit())
        self.signed_digits = self._mask(lambda b: b.isdigit() or (b[:1] == b"-" and (len(b) == 1 or b[1:].isdigit())))

    @property
    def json_grammar(self) -> JsonGrammar:
        """The vocabulary for JSON Schema decoding (llguidance), built on first use (~0.3 s)."""
        if self._json is None:
            tok = self._tokenizer
            eos = tok.token_id(tok.eos_token)
            self._json = JsonGrammar(tok._tok.to_str(), self.size, [eos if eos is not None else 0])
        return self._json

    def _mask(self, pred) -> np.ndarray:
        return np.array([bool(b) and pred(b) for b in self.token_bytes], dtype=bool)

    def prefix_tokens(self, text: bytes) -> list[int]:
        """Token ids whose bytes are a non-empty prefix of `text`."""
        out = []
        for k in range(1, min(len(text), self.max_len) + 1):
            idx = self.by_bytes.get(text[:k])
            if idx is not None:
                out.append(idx)
        return out


def _is_string_body(b: bytes) -> bool:
    return b'"' not in b and b"\\" not in b and all(x >= 0x20 for x in b)


def _closes_string(b: bytes) -> bool:
    return b.endswith(b'"') and _is_string_body(b[:-1])
