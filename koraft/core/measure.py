"""Measurements every stage reports: peak memory, sizes on disk, length statistics."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np


def peak_memory_mib() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def directory_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def length_stats(values) -> dict[str, float]:
    if not len(values):
        return {"mean": 0.0, "p95": 0.0, "max": 0}
    data = np.asarray(values)
    return {"mean": round(float(data.mean()), 2), "p95": round(float(np.percentile(data, 95)), 2),
            "max": int(data.max())}
