"""A chain of thought's quotes, found in the golden document as an LLM writes them.

An LLM writing RAFT data (gorilla's generator, a team's own prompts) usually wraps a quoted span
in quotation marks (`##begin_quote## "..." ##end_quote##`), swaps straight and curly marks,
changes Korean word spacing or folds line breaks. Such a quote is still the document's text, so it
is looked up after folding both sides: Unicode NFKC, no whitespace, no quotation marks. A quote
found that way is rewritten to the document's own span, so training targets always quote
verbatim; a quote not found even then is "unverified", and `validate.unverified_quotes` decides.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from koraft.core.formats import QUOTE

UNVERIFIED_POLICIES = ("reject", "keep", "strip")
# Straight, curly, low-9, guillemets, CJK corner and angle brackets, backtick: the marks LLMs put around a quote.
QUOTE_MARKS = frozenset("\"'`\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u00ab\u00bb\u2039\u203a"
                        "\u300c\u300d\u300e\u300f\u3008\u3009\u300a\u300b\uff02\uff07")


def fold(text: str) -> tuple[str, list[int]]:
    """The folded text, and for each of its characters the index of the character it came from."""
    folded, origin = [], []
    for index, char in enumerate(text):
        for piece in unicodedata.normalize("NFKC", char):
            if not piece.isspace() and piece not in QUOTE_MARKS:
                folded.append(piece)
                origin.append(index)
    return "".join(folded), origin


def locate(quote: str, document: str, folded_document: tuple[str, list[int]] | None = None) -> str | None:
    """The document's own text that `quote` quotes, verbatim or after folding; None when it is not there."""
    if quote in document:
        return quote
    needle, _ = fold(quote)
    if not needle:
        return None  # only marks and spaces: quotes nothing
    haystack, origin = folded_document or fold(document)
    start = haystack.find(needle)
    if start < 0:
        return None
    return document[origin[start] : origin[start + len(needle) - 1] + 1]


@dataclass(frozen=True)
class QuoteCheck:
    cot: str  # the chain of thought, every found quote in the document's own words
    outcome: str  # verbatim | folded | unverified
    missing: str | None  # the first quote not found, for the reject's detail


def check_quotes(cot: str, document: str) -> QuoteCheck:
    """Find every quote of `cot` in `document`; verbatim when all are there as written."""
    folded_document = functools.cache(lambda: fold(document))  # per character in Python: once, if at all
    missing: str | None = None
    outcome = "verbatim"

    def replace(match: re.Match) -> str:
        nonlocal missing, outcome
        inner = match.group(1)
        quote = inner.strip()
        if not quote or quote in document:
            return match.group(0)
        found = locate(quote, document, folded_document())
        if found is None:
            missing = missing or quote
            outcome = "unverified"
            return match.group(0)
        if outcome == "verbatim":
            outcome = "folded"
        lead, trail = inner[: len(inner) - len(inner.lstrip())], inner[len(inner.rstrip()) :]
        return f"##begin_quote##{lead}{found}{trail}##end_quote##"

    repaired = QUOTE.sub(replace, cot)
    return QuoteCheck(repaired, outcome, missing)
