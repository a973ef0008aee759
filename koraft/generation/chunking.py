"""Documents -> chunks of about `size` characters or teacher tokens, cut at Kiwi's sentence boundaries.

Each chunk becomes one RAFT document: the golden document of the questions written about it, with
a stable id (the hash of its text), so validate's grouping and the split's no-leakage rule treat it
like any other document. Consecutive chunks share up to `overlap` of trailing sentences, so a fact
that straddles a cut is whole in one of them; a sentence longer than `size` is cut on its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from koraft.core.morphemes import sentences
from koraft.generation.documents import Document


@dataclass(frozen=True)
class Chunk:
    chunk_id: str  # "chunk-" + 16 hex of the text's SHA-1: the same text is the same chunk in every run
    text: str
    source: str  # "manual.pdf p.3-4"
    length: int  # in the chunking unit


def chunk_document(document: Document, size: int, overlap: int, measure: Callable[[str], int]) -> list[Chunk]:
    """The document's chunks in reading order; `measure` gives a text's length in the unit of size and overlap."""
    pieces = []  # (sentence, its passage's label, its length, whether a line break comes before it)
    for passage in document.passages:
        for sentence, starts_line in sentences(passage.text):
            length = measure(sentence)
            for index, part in enumerate(_cut(sentence, length, size)):
                pieces.append((part, passage.where, measure(part) if part is not sentence else length,
                               starts_line and index == 0))
    chunks, current = [], []
    for piece in pieces:
        if current and sum(p[2] for p in current) + piece[2] > size:
            chunks.append(_chunk(document.path, current, measure))
            tail = []  # the overlap: the closed chunk's last sentences, up to `overlap` in length
            for earlier in reversed(current):
                if sum(p[2] for p in tail) + earlier[2] > overlap:
                    break
                tail.insert(0, earlier)
            current = tail
            while current and sum(p[2] for p in current) + piece[2] > size:
                current.pop(0)
        current.append(piece)
    if current:
        chunks.append(_chunk(document.path, current, measure))
    return chunks


def _cut(sentence: str, length: int, size: int) -> list[str]:
    if length <= size:
        return [sentence]
    width = max(1, len(sentence) * size // length)  # characters per piece for about `size` units each
    return [sentence[start:start + width] for start in range(0, len(sentence), width)]


def _chunk(path: str, pieces: list[tuple[str, str, int, bool]], measure: Callable[[str], int]) -> Chunk:
    text = pieces[0][0] + "".join(("\n" if piece[3] else " ") + piece[0] for piece in pieces[1:])
    labels = list(dict.fromkeys(piece[1] for piece in pieces if piece[1]))
    if len(labels) <= 1:
        where = "".join(labels)
    elif all(label.startswith("p.") for label in labels):
        where = f"{labels[0]}-{labels[-1].removeprefix('p.')}"  # p.3-4
    else:
        where = f"{labels[0]} .. {labels[-1]}"
    source = f"{path} {where}".strip()
    return Chunk("chunk-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16], text, source, measure(text))
