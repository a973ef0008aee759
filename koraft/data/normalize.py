"""Text cleanup applied to every field before validation and deduplication."""

from __future__ import annotations

import re
import unicodedata

# Zero-width characters that survive NFC and make identical-looking strings differ.
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u2060\ufeff"), None)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def has_invalid_utf8(text: str) -> bool:
    """True when the text was decoded with surrogateescape from bytes that are not UTF-8."""
    return _LONE_SURROGATE.search(text) is not None


def clean_text(text: str) -> str:
    """NFC (macOS input arrives as NFD jamo), drop control and zero-width characters, fold whitespace."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text).translate(_ZERO_WIDTH)
    return " ".join(text.split())
