"""The GPU benchmark's code paths, run in its reduced --smoke form on the CPU (tiny shapes, 3 steps)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = [pytest.mark.slow]


def test_gpu_benchmark_smoke_runs_every_configuration_on_the_cpu():
    result = subprocess.run([sys.executable, "benchmarks/gpu_throughput.py", "--smoke"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert not [line for line in lines if "failed:" in line], result.stdout
    for method in ("lora", "qlora"):
        plain = [line for line in lines if line.startswith("(a) plain") and f" {method} " in line]
        ours = [line for line in lines if line.startswith("(b) koraft default") and f" {method} " in line]
        assert len(plain) == len(ours) == 1, result.stdout
        assert plain[0].endswith("padded, sdpa") and ours[0].endswith("packed, sdpa")
        assert float(ours[0].split()[5]) > 0  # tokens/s
        assert any(line.startswith(f"{method} at 128: koraft / plain tokens/s = ") for line in lines)
    assert any(line.startswith("(c) koraft + Liger") and "skipped: liger-kernel not installed" in line
               for line in lines)
    gemma = [line for line in lines if line.startswith("Gemma-2-9B: koraft default")]
    assert len(gemma) == 1 and " qlora " in gemma[0] and gemma[0].endswith("packed, eager")  # CPU: no flash kernel
    assert not [line for line in lines if line.startswith("{")]  # the trainer's log lines stay out of the table
