"""How Korean a text is: the share of Hangul among its letters."""

from __future__ import annotations


def hangul_share(text: str) -> float | None:
    """Hangul syllables and jamo among the letters of `text` (digits, marks and spaces do not count); None when
    it has no letters at all (a number, say)."""
    letters = [char for char in text if char.isalpha()]
    hangul = sum("\uac00" <= char <= "\ud7a3" or "\u1100" <= char <= "\u11ff" or "\u3130" <= char <= "\u318f"
                 for char in letters)
    return hangul / len(letters) if letters else None
