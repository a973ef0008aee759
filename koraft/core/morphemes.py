"""Kiwi morpheme analysis, shared by BM25 retrieval and the Korean metrics; its sentence splitter, by generate's
chunking and the preference pairs.

Korean attaches particles and endings to words (서울에서, 서울은), so whitespace tokens rarely
match across sentences; Kiwi's morpheme analysis recovers the shared stems (서울 + 에서).
"""

from __future__ import annotations

import os
from functools import cache

# Content morphemes: nouns, numerals, pronouns, verb/adjective stems, roots, foreign words, numbers, hanja.
CONTENT_TAG_PREFIXES = ("NN", "NR", "NP", "VV", "VA", "XR", "SL", "SN", "SH")
# Symbols (S*) other than foreign words, numbers and hanja: punctuation, brackets, other marks.
_WORD_SYMBOL_TAGS = ("SL", "SN", "SH")


def _is_word(tag: str) -> bool:
    return not tag.startswith("S") or tag.startswith(_WORD_SYMBOL_TAGS)


class MorphemeTokenizer:
    """texts -> morpheme forms; `content_only` keeps what BM25 matches on, else every non-punctuation morpheme."""

    def __init__(self, content_only: bool = True) -> None:
        self._kiwi = kiwi()
        self.content_only = content_only

    def __call__(self, texts: list[str]) -> list[list[str]]:
        analyses = self._kiwi.tokenize(texts)
        if self.content_only:
            return [[t.form for t in tokens if t.tag.startswith(CONTENT_TAG_PREFIXES)] for tokens in analyses]
        return [[t.form.lower() for t in tokens if _is_word(t.tag)] for tokens in analyses]


@cache
def kiwi():
    """Kiwi's analyser, loaded once per process (its model takes about a second and 500 MiB).

    Its worker threads analyse a batch of texts on every core this process may use: 1.6x one
    thread's rate on 2 cores (measured), with the same analyses, as each text is analysed alone.
    """
    from kiwipiepy import Kiwi

    return Kiwi(num_workers=len(os.sched_getaffinity(0)))


@cache
def morpheme_tokenizer(content_only: bool = True) -> MorphemeTokenizer:
    """One tokenizer per process and mode, sharing one Kiwi, however many indexes and scorers use it."""
    return MorphemeTokenizer(content_only)


def sentences(text: str) -> list[tuple[str, bool]]:
    """(sentence, whether it starts a line) by Kiwi, line by line: a line break (a heading, a table row) ends one."""
    found = []
    for line in text.split("\n"):
        if line.strip():
            split = [sentence.text for sentence in kiwi().split_into_sents(line) if sentence.text.strip()]
            found += [(sentence, index == 0) for index, sentence in enumerate(split)]
    return found
