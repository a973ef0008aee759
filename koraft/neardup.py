"""Near-duplicate document grouping: MinHash over character n-grams, LSH banding, union-find.

Every distinct document text gets a group id; near-identical texts (estimated Jaccard
similarity of their character n-gram sets >= threshold) share one. The group id is derived
from the content hash of the group's smallest member, so it does not depend on input order.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

# Fixed, not a param: changing it would renumber every document group.
_PERMUTATION_SEED = 0x6B6F72616674
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def signatures(texts: list[str], shingle_size: int, num_perm: int) -> np.ndarray:
    """MinHash signatures, shape (len(texts), num_perm), dtype uint32."""
    rng = np.random.default_rng(_PERMUTATION_SEED)
    multipliers = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    offsets = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    powers = np.array([pow(1_000_003, shingle_size - 1 - i, 2**64) for i in range(shingle_size)], np.uint64)
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    with np.errstate(over="ignore"):
        for row, text in enumerate(texts):
            hashes = _mix(_shingle_hashes(text, shingle_size, powers))
            # Multiply-shift hashing: one cheap universal permutation per column.
            permuted = (hashes[:, None] * multipliers[None, :] + offsets[None, :]) >> np.uint64(32)
            out[row] = permuted.min(axis=0)
    return out


def _shingle_hashes(text: str, size: int, powers: np.ndarray) -> np.ndarray:
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) < size:  # a text shorter than one shingle is its own single shingle
        codes = np.concatenate([codes, np.zeros(size - len(codes), np.uint64)])
    windows = np.lib.stride_tricks.sliding_window_view(codes, size)
    return np.unique((windows * powers).sum(axis=1))


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads the polynomial hash over all 64 bits."""
    values = values ^ (values >> np.uint64(30))
    values = values * np.uint64(0xBF58476D1CE4E5B9)
    values = values ^ (values >> np.uint64(27))
    values = values * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def group_documents(
    texts: Iterable[str], threshold: float, shingle_size: int, num_perm: int, bands: int
) -> dict[str, str]:
    """Map each distinct text to its near-duplicate group id."""
    unique = sorted(set(texts), key=text_hash)  # hash order: the result is independent of input order
    hashes = [text_hash(text) for text in unique]
    sigs = signatures(unique, shingle_size, num_perm)
    parent = list(range(len(unique)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows = num_perm // bands
    for band in range(bands):
        buckets: dict[bytes, int] = {}
        block = np.ascontiguousarray(sigs[:, band * rows : (band + 1) * rows])
        for i in range(len(unique)):
            key = block[i].tobytes()
            first = buckets.setdefault(key, i)
            # Verify the LSH candidate on the full signature before merging.
            if first != i and np.mean(sigs[first] == sigs[i]) >= threshold:
                a, b = find(first), find(i)
                parent[max(a, b)] = min(a, b)  # the root is always the smallest hash in its group
    members = defaultdict(list)
    for i in range(len(unique)):
        members[find(i)].append(i)
    return {unique[i]: f"doc-{hashes[root][:16]}" for root, group in members.items() for i in group}
