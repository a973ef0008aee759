"""Split assignment by document: a hash bucket of `doc_id`, so it is known before any stage runs.

Adding data never moves an existing document: its bucket depends only on its own id, the
seed and the ratios.
"""

from __future__ import annotations

import hashlib

from koraft.params import SPLITS


def assign_split(doc_id: str, ratios: dict[str, float], seed: int) -> str:
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name in SPLITS:
        edge += ratios[name]
        if bucket < edge:
            return name
    return [name for name in SPLITS if ratios[name] > 0][-1]  # float rounding at the top edge
