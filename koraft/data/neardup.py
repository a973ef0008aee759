"""Near-duplicate document grouping: MinHash over character n-grams, LSH banding, union-find.

Every distinct document text gets a group id; near-identical texts (estimated Jaccard
similarity of their character n-gram sets >= threshold) share one. The group id is derived
from the content hash of the group's smallest member, so it does not depend on input order.
"""

from __future__ import annotations

import hashlib

import numpy as np

# Fixed, not a param: changing it would renumber every document group.
_PERMUTATION_SEED = 0x6B6F72616674
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class MinHasher:
    """MinHash signatures (num_perm uint32 values) of texts' character n-gram sets, one text at a time."""

    def __init__(self, shingle_size: int, num_perm: int) -> None:
        rng = np.random.default_rng(_PERMUTATION_SEED)
        self.multipliers = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self.offsets = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self.powers = np.array([pow(1_000_003, shingle_size - 1 - i, 2**64) for i in range(shingle_size)], np.uint64)
        self.shingle_size = shingle_size

    def __call__(self, text: str) -> np.ndarray:
        with np.errstate(over="ignore"):
            hashes = _mix(_shingle_hashes(text, self.shingle_size, self.powers))
            # Multiply-shift hashing: one cheap universal permutation per column.
            permuted = (hashes[:, None] * self.multipliers[None, :] + self.offsets[None, :]) >> np.uint64(32)
            return permuted.min(axis=0).astype(np.uint32)


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


class DocumentGrouper:
    """Near-duplicate groups of distinct texts, fed one text at a time.

    Holds each distinct text's hash and signature, never the text: memory grows with the number of
    distinct documents times num_perm * 4 bytes, not with their length.
    """

    def __init__(self, threshold: float, shingle_size: int, num_perm: int, bands: int) -> None:
        self.threshold, self.bands = threshold, bands
        self.minhash = MinHasher(shingle_size, num_perm)
        self.hashes: dict[str, int] = {}  # text hash -> row of its signature
        self._blocks: list[np.ndarray] = []
        self._block = np.empty((4096, num_perm), dtype=np.uint32)
        self._filled = 0

    def add(self, text: str) -> str:
        """Register a text (a repeat is free); returns its hash, the key of group_ids()."""
        key = text_hash(text)
        if key not in self.hashes:
            if self._filled == len(self._block):
                self._blocks.append(self._block)
                self._block = np.empty_like(self._block)
                self._filled = 0
            self._block[self._filled] = self.minhash(text)
            self._filled += 1
            self.hashes[key] = len(self.hashes)
        return key

    def group_ids(self) -> dict[str, str]:
        """Map each text hash to its group id, once (it frees the signatures); independent of input order."""
        hashes = sorted(self.hashes)  # hash order, as the group roots are the smallest hash of each group
        rows = np.array([self.hashes[key] for key in hashes], dtype=np.int64)  # hash order -> signature row
        sigs = np.concatenate([*self._blocks, self._block[: self._filled]])
        self._blocks, self._block = [], self._block[:0]  # one copy of the signatures at a time
        parent = list(range(len(hashes)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        width = sigs.shape[1] // self.bands
        for band in range(self.bands):
            buckets: dict[bytes, int] = {}
            block = np.ascontiguousarray(sigs[rows, band * width : (band + 1) * width])
            for i in range(len(hashes)):
                first = buckets.setdefault(block[i].tobytes(), i)
                # Verify the LSH candidate on the full signature before merging.
                if first != i and np.mean(sigs[rows[first]] == sigs[rows[i]]) >= self.threshold:
                    a, b = find(first), find(i)
                    parent[max(a, b)] = min(a, b)  # the root is always the smallest hash in its group
        return {key: f"doc-{hashes[find(i)][:16]}" for i, key in enumerate(hashes)}

