"""The tokenizer a GGUF file describes, rebuilt as a `tokenizers` tokenizer.json.

Byte-level BPE (`tokenizer.ggml.model` = gpt2) only: the vocabulary and merges come from the
metadata; how text is split before BPE comes from `tokenizer.ggml.pre`, as llama.cpp splits it:
  smollm, starcoder, refact   every digit alone, then the GPT-2 regex (llama.cpp: "\\p{N}" first)
  gpt-2, default              the GPT-2 regex (ByteLevel's own)
  llama-bpe, llama3, ...      Llama 3's regex (numbers in runs of up to three digits)
  qwen2, deepseek-r1-qwen     Qwen2's regex (each digit alone)
  qwen35                      Qwen3.5's regex (marks joined to letters)
The regexes are the ones transformers' GGUF loader uses (integrations/gguf), which are
llama.cpp's; we copy them rather than import transformers, which the runtime host lacks.
"""
from __future__ import annotations

TOKEN_CONTROL, TOKEN_USER_DEFINED = 3, 4  # llama.cpp token types (gguf.TokenType)

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact"}
GPT2_PRE = {"gpt-2", "gpt2", "default"}
REGEX_PRE = {
    "llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT, "qwen35": _QWEN35_SPLIT,
}
SUPPORTED_PRE = sorted(DIGIT_SPLIT_PRE | GPT2_PRE | set(REGEX_PRE))


class GGUFTokenizerError(ValueError):
    """A tokenizer this module cannot rebuild; the message says which and what is supported."""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the alphabet byte-level vocabularies use)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


def _pre_tokenizer(pre: str):
    from tokenizers import Regex, pre_tokenizers

    if pre in DIGIT_SPLIT_PRE:
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in GPT2_PRE:
        return pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in REGEX_PRE:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(REGEX_PRE[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    raise GGUFTokenizerError(f"tokenizer.ggml.pre {pre!r} is not supported (known: {', '.join(SUPPORTED_PRE)})")


def build_tokenizer(meta: dict):
    """A `tokenizers.Tokenizer` equal to the one the GGUF describes (tokenizer.ggml.model == gpt2)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise GGUFTokenizerError(f"tokenizer.ggml.model is {kind!r}; only byte-level BPE ('gpt2') is supported")
    if "tokenizer.ggml.tokens" not in meta or "tokenizer.ggml.merges" not in meta:
        raise GGUFTokenizerError("the GGUF has no tokenizer.ggml.tokens / merges to rebuild its tokenizer from")
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]

    # A byte-level vocabulary spells every token in the GPT-2 alphabet; respell one that is not
    # (as transformers' GGUF loader does) so that the vocabulary keeps its size.
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {}
    for index, token in enumerate(tokens):
        if not set(token) <= alphabet:
            token = "".join(spelling[b] for b in token.encode("utf-8"))
        vocab.setdefault(token, index)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre", "default"))
    tokenizer.decoder = decoders.ByteLevel()

    # CONTROL tokens (<|im_start|>, ...) must match whole in the text, never be cut into bytes.
    # transformers skips a control token spelled outside the byte alphabet (a llama.cpp mislabel).
    specials = [AddedToken(t, special=True, normalized=False) for t, token_type in zip(tokens, types)
                if token_type == TOKEN_CONTROL and set(t) <= alphabet]
    user = [AddedToken(t, special=False, normalized=False) for t, token_type in zip(tokens, types)
            if token_type == TOKEN_USER_DEFINED]
    tokenizer.add_special_tokens(specials)
    tokenizer.add_tokens(user)

    bos_id = meta.get("tokenizer.ggml.bos_token_id")
    if meta.get("tokenizer.ggml.add_bos_token") and bos_id is not None:
        bos = tokens[bos_id]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, int(bos_id))]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def tokenizer_config(meta: dict, context_length: int) -> dict:
    """tokenizer_config.json: chat template, the four role tokens, and every added token."""
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)

    def token_of(key: str) -> str | None:
        index = meta.get(f"tokenizer.ggml.{key}")
        return None if index is None else tokens[index]

    added = {
        str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": token_type == TOKEN_CONTROL}
        for i, (t, token_type) in enumerate(zip(tokens, types)) if token_type in (TOKEN_CONTROL, TOKEN_USER_DEFINED)
    }
    config = {
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": bool(meta.get("tokenizer.ggml.add_space_prefix", False)),
        "added_tokens_decoder": added,
        "bos_token": token_of("bos_token_id"),
        "eos_token": token_of("eos_token_id"),
        "pad_token": token_of("padding_token_id"),
        "unk_token": token_of("unknown_token_id"),
        "clean_up_tokenization_spaces": False,
        "model_max_length": context_length,
        # The generic class: it takes tokenizer.json as written instead of rebuilding a pipeline.
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = meta["tokenizer.chat_template"]
    return config
