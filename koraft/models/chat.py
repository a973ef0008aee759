"""Render a RAFT record through the model's own chat template, the same way for train and eval.

The prompt is the template's rendering of [system, user] with the generation prompt appended;
the target is the completion text followed by the family's end-of-turn token. Training and
generation both start from `render_prompt`, so whatever the template puts after the assistant
header (EXAONE-4's empty think block, Llama's header) is identical in both.
"""

from __future__ import annotations

import hashlib
from typing import Any

from koraft.core.errors import KoraftError
from koraft.core.formats import completion, user_message
from koraft.models.presets import Family


def chat_messages(family: Family, system_prompt: str, user: str) -> list[dict[str, str]]:
    """The conversation for one prompt, with the family's system-role quirks applied."""
    if not family.supports_system_role:
        # Gemma-2's template rejects a system turn: the system text leads the first user turn.
        content = f"{system_prompt}\n\n{user}" if system_prompt else user
        return [{"role": "user", "content": content}]
    if system_prompt or family.always_system_prompt:
        # Qwen2.5 writes its own default system prompt when none is given; an explicit one, even
        # empty, keeps it out.
        return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]
    return [{"role": "user", "content": user}]


def render_prompt(tokenizer: Any, family: Family, system_prompt: str, record: dict[str, Any]) -> str:
    """The exact text the model sees before it answers `record`."""
    if not getattr(tokenizer, "chat_template", None):
        raise KoraftError(f"tokenizer {tokenizer.name_or_path!r} has no chat template; koraft renders prompts "
                          f"only through the model's own template (add one to tokenizer_config.json)")
    messages = chat_messages(family, system_prompt, user_message(record))
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         **family.template_kwargs)


def end_of_turn(tokenizer: Any, family: Family) -> str:
    """The token that closes an assistant turn: trained on, and where generation stops."""
    token = family.eos_token or tokenizer.eos_token
    if not token:
        raise KoraftError(f"tokenizer {tokenizer.name_or_path!r} defines no eos token and family "
                          f"{family.name} names no end-of-turn token")
    return token


def stop_token_ids(model: Any, tokenizer: Any, family: Family) -> list[int]:
    """Where generation ends: the generation config's eos ids, the tokenizer's eos and the family's end of turn."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids |= {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer, family))}
    return sorted(i for i in ids if i is not None and i != tokenizer.unk_token_id)


def render_target(tokenizer: Any, family: Family, record: dict[str, Any]) -> str:
    return completion(record) + end_of_turn(tokenizer, family)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
