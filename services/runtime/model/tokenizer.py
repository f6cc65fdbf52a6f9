"""Tokenizer (HF `tokenizers`) and chat template (jinja2, rendered as HF renders it)."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as HFTokenizer

from inloop.services.runtime.model.config import ModelLoadError


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # HF's tojson filter: no HTML escaping, unicode kept as is
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def _template_file(model_dir: Path) -> str | None:
    """Newer Hub repos keep the template beside tokenizer_config.json: chat_template.jinja, or
    the older chat_template.json ({"chat_template": ...})."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    named = model_dir / "chat_template.json"
    return json.loads(named.read_text()).get("chat_template") if named.is_file() else None


class Tokenizer:
    def __init__(self, model_dir: str | Path):
        model_dir = Path(model_dir)
        tok_path = model_dir / "tokenizer.json"
        if not tok_path.is_file():
            raise ModelLoadError(f"{tok_path} not found: inloop needs a `tokenizers` tokenizer.json")
        self._tok = HFTokenizer.from_file(str(tok_path))
        cfg_path = model_dir / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        self.chat_template: str | None = cfg.get("chat_template") or _template_file(model_dir)
        if isinstance(self.chat_template, list):  # named templates: take "default"
            named = {t["name"]: t["template"] for t in self.chat_template}
            self.chat_template = named.get("default") or next(iter(named.values()))
        self.bos_token = _token_text(cfg.get("bos_token"))
        self.eos_token = _token_text(cfg.get("eos_token"))
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._template = env.from_string(self.chat_template) if self.chat_template else None
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def token_id(self, text: str | None) -> int | None:
        return None if text is None else self._tok.token_to_id(text)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Text to ids. Special tokens written in the text (e.g. <|im_start|>) become their ids.

        add_special_tokens runs the tokenizer's post-processor (a BOS where the model wants
        one), as HF does for a raw prompt; a rendered chat template already has its own.
        """
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True,
                    tools: list[dict] | None = None, **variables) -> str:
        """Messages [{role, content}] -> the prompt string, as HF's apply_chat_template renders it;
        `variables` reach the template as HF's chat-template kwargs do (enable_thinking=...)."""
        if self._template is None:
            # No template: a plain ChatML rendering, the common convention of these families.
            parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
            return "".join(parts) + ("<|im_start|>assistant\n" if add_generation_prompt else "")
        return self._template.render(
            messages=messages, add_generation_prompt=add_generation_prompt, tools=tools,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "", **variables,
        )
