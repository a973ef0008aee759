"""Pinned CPU numerics, so a run gives the same bits on another x86-64 machine of the same vendor.

On one machine koraft's runs are bitwise repeatable. Across machines they were not: PyTorch and MKL
pick their kernels (vector width, blocking) from the CPU they find, so an AVX-512 machine and an AVX2
one sum in different orders, and training drifts apart in the last digits. These variables fix every
such choice to one code path:

- ATEN_CPU_CAPABILITY=avx512 on Intel CPUs with AVX-512, avx2 elsewhere: PyTorch's own vectorised kernels
  (reductions, softmax, attention, optimizers);
- MKL_CBWR (MKL's conditional numerical reproducibility, matrix products), strict, so results do
  not depend on the thread count or the memory alignment: AVX512,STRICT on Intel CPUs with AVX-512,
  AVX2,STRICT on other Intel CPUs, COMPATIBLE,STRICT on others. MKL honours its ISA branches on Intel
  CPUs only and falls back to its AUTO dispatch on AMD ones (MKL's developer guide; measured on a
  2-core AMD EPYC: MKL_CBWR=AVX2 gave AUTO's bits), so AMD machines take the branch MKL supports on
  every vendor. COMPATIBLE everywhere does not make Intel and AMD agree either (measured:
  docs/experiments.md), and on Intel it costs 1.9x against the AVX2 branch
  in training (benchmarks/train_throughput.py steps: 7,106 tokens/s against 13,281; native 16,865);
- ONEDNN_MAX_CPU_ISA=AVX512_CORE or AVX2 (the same width): oneDNN, for the few operators PyTorch hands to it.

They must be in the environment before torch is first imported, so the stage package sets them on
import (stages/__init__.py), and accelerate-launched processes inherit them. KORAFT_NATIVE_NUMERICS=1
leaves the CPU's fastest paths on, at the cost of cross-machine equality (docs/experiments.md).

Measured on a 2-core AVX-512 Intel machine (benchmarks/numerics.py): unpinned, a 12-step LoRA run gives
a different adapter with 1 thread than with 2, and another with ATEN_CPU_CAPABILITY=avx2 or MKL_CBWR set;
with MKL_CBWR=AVX2,STRICT, 1 and 2 threads gave the same adapter. With COMPATIBLE, on a 2-core AMD
EPYC, they do not (tests/test_numerics.py checks the kernels at 2 threads): the committed metrics hold
for 2 threads, the CI machines' count, and for CPUs of the vendor that committed them.
"""

from __future__ import annotations

import os

CPUINFO = "/proc/cpuinfo"


def cpu_vendor(cpuinfo: str = CPUINFO) -> str | None:
    """The CPU's vendor id (GenuineIntel, AuthenticAMD, ...), None where /proc/cpuinfo does not say."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def has_avx512(cpuinfo: str = CPUINFO) -> bool:
    """Whether the CPU reports AVX-512 Foundation (the flag `avx512f` of /proc/cpuinfo)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as lines:
            return any(line.startswith("flags") and "avx512f" in line.split() for line in lines)
    except OSError:
        return False


def pinned(vendor: str | None, avx512: bool = False) -> dict[str, str]:
    """The variables for a CPU of this vendor: on Intel, MKL's AVX-512 branch where the CPU has AVX-512 and its
    AVX2 branch elsewhere, PyTorch's and oneDNN's kernels of the same width; on other vendors MKL's
    vendor-independent branch with AVX2 kernels.

    The AVX-512 branch (since 2026-12-06): the real default model, Gemma 3 270M, trained with LoRA at 85 tokens/s
    under the AVX2 pin and 166 under this one (native: 193) on a 2-core Xeon; every Intel Xeon koraft's CI runs
    on has AVX-512, so they still share one code path (docs/experiments.md)."""
    if vendor == "GenuineIntel" and avx512:
        return {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
    mkl = "AVX2,STRICT" if vendor == "GenuineIntel" else "COMPATIBLE,STRICT"
    return {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": mkl, "ONEDNN_MAX_CPU_ISA": "AVX2"}


def pin_environment() -> dict[str, str]:
    """Set the pinned variables (overriding the caller's) unless KORAFT_NATIVE_NUMERICS=1; returns what it set."""
    if os.environ.get("KORAFT_NATIVE_NUMERICS") == "1":
        return {}
    variables = pinned(cpu_vendor(), has_avx512())
    os.environ.update(variables)
    return variables
