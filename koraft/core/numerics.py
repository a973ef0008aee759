"""Pinned CPU numerics, so a run gives the same bits on another x86-64 machine, Intel or AMD.

On one machine koraft's runs are bitwise repeatable. Across machines they were not: PyTorch and MKL
pick their kernels (vector width, blocking) from the CPU they find, so an AVX-512 machine and an AVX2
one sum in different orders, and training drifts apart in the last digits. These variables fix every
such choice to one code path:

- ATEN_CPU_CAPABILITY=avx2: PyTorch's own vectorised kernels (reductions, softmax, attention,
  optimizers), which every x86-64 CPU of the last decade runs;
- MKL_CBWR=COMPATIBLE,STRICT: MKL's conditional numerical reproducibility (matrix products). MKL
  honours its AVX2 branch on Intel CPUs only and falls back to its AUTO dispatch on AMD ones (MKL's
  developer guide; measured here on a 2-core AMD EPYC: MKL_CBWR=AVX2 gave AUTO's bits, and the pin of
  issue 16 a different adapter than on the Intel machine that committed the metrics). COMPATIBLE is
  the branch MKL supports on every vendor; strict, results do not depend on the thread count or the
  memory alignment. It costs about 1.7x on large float32 products here, little in the tiny pipeline;
- ONEDNN_MAX_CPU_ISA=AVX2: oneDNN, for the few operators PyTorch hands to it.

They must be in the environment before torch is first imported, so the stage package sets them on
import (stages/__init__.py), and accelerate-launched processes inherit them. KORAFT_NATIVE_NUMERICS=1
leaves the CPU's fastest paths on, at the cost of cross-machine equality (docs/experiments.md).

Measured on a 2-core AVX-512 Intel machine (benchmarks/numerics.py): unpinned, a 12-step LoRA run gives
a different adapter with 1 thread than with 2, and another with ATEN_CPU_CAPABILITY=avx2 or MKL_CBWR set;
with the first pin (MKL_CBWR=AVX2,STRICT), 1 and 2 threads gave the same adapter. With COMPATIBLE, on
a 2-core AMD EPYC, they do not (tests/test_numerics.py checks the kernels at 2 threads): the committed
metrics hold for 2 threads, the CI machines' count.
"""

from __future__ import annotations

import os

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def pin_environment() -> dict[str, str]:
    """Set the pinned variables (overriding the caller's) unless KORAFT_NATIVE_NUMERICS=1; returns what it set."""
    if os.environ.get("KORAFT_NATIVE_NUMERICS") == "1":
        return {}
    os.environ.update(PINNED)
    return dict(PINNED)
