"""Pinned CPU numerics: training gives the same bits whatever CPU kernels the environment asks for.

At a fixed thread count only: under MKL's COMPATIBLE branch (the pin on CPUs other than Intel's) a
1-thread and a 2-thread run differ on a 2-core AMD EPYC, where MKL's AVX2 branch (the pin on Intel
CPUs) kept them equal (koraft/core/numerics.py). The committed metrics come from 2 threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT, model_params, quick, write_jsonl

pytestmark = [pytest.mark.slow]

# Run in a fresh interpreter, as a stage runs: importing `stages` pins the numerics before torch loads.
WORKER = """
import json, sys
import stages  # noqa: F401
import torch
from pathlib import Path
from koraft.core.jsonl import read_jsonl
from koraft.training.config import train_settings
from koraft.training.train import TrainPaths, train
job = json.loads(sys.argv[1])
root = Path(job["root"])
train(list(read_jsonl(root / "train.jsonl")), list(read_jsonl(root / "val.jsonl")),
      train_settings(job["model"], job["settings"]),
      TrainPaths(adapter=root / "adapter", checkpoints=root / "checkpoints", plots=root / "plots",
                 tiny_models=Path(job["tiny_models"])))
print(json.dumps({"threads": torch.get_num_threads(), "capability": torch.backends.cpu.get_cpu_capability()}))
"""


def train_in_process(root, environment: dict[str, str], job: dict) -> tuple[str, dict]:
    env = {**os.environ, **environment}
    env.pop("KORAFT_NATIVE_NUMERICS", None)
    done = subprocess.run([sys.executable, "-c", WORKER, json.dumps({**job, "root": str(root)})], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    weights = (root / "adapter" / "adapter_model.safetensors").read_bytes()
    return hashlib.sha256(weights).hexdigest(), json.loads(done.stdout.strip().splitlines()[-1])


def test_training_is_bitwise_equal_whatever_cpu_kernels_the_environment_asks_for(params, raft_rows, tiny_models,
                                                                                 tmp_path):
    job = {"model": model_params(params, "tiny-m"), "settings": quick(params, "lora", steps=6),
           "tiny_models": str(tiny_models)}
    runs = {}
    for name, environment in {"generic kernels, MKL's AVX2 branch": {"OMP_NUM_THREADS": "2", "MKL_CBWR": "AVX2",
                                                                      "ATEN_CPU_CAPABILITY": "default"},
                              "no requests": {"OMP_NUM_THREADS": "2"}}.items():
        root = tmp_path / name.replace(" ", "_").replace(",", "").replace("'", "")
        root.mkdir()
        write_jsonl(root / "train.jsonl", raft_rows["train"][:24])
        write_jsonl(root / "val.jsonl", raft_rows["val"][:4])
        runs[name] = train_in_process(root, environment, job)
    (first, first_info), (second, second_info) = runs.values()
    assert first_info["threads"] == second_info["threads"] == 2
    from koraft.core.numerics import cpu_vendor, has_avx512, pinned

    pin = pinned(cpu_vendor(), has_avx512())["ATEN_CPU_CAPABILITY"].upper()
    assert first_info["capability"] == second_info["capability"] == pin  # the pin overrode the request
    assert first == second


def test_mkl_takes_its_avx2_branch_on_intel_and_the_vendor_independent_one_elsewhere(tmp_path):
    from koraft.core.numerics import cpu_vendor, has_avx512, pinned

    intel, amd = tmp_path / "intel", tmp_path / "amd"
    intel.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n")
    amd.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    assert cpu_vendor(str(intel)) == "GenuineIntel" and cpu_vendor(str(amd)) == "AuthenticAMD"
    assert cpu_vendor(str(tmp_path / "missing")) is None
    assert pinned("GenuineIntel")["MKL_CBWR"] == "AVX2,STRICT"
    assert pinned("GenuineIntel", avx512=True) == {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX512,STRICT",
                                                   "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
    assert pinned("AuthenticAMD", avx512=True)["MKL_CBWR"] == pinned(None)["MKL_CBWR"] == "COMPATIBLE,STRICT"
    assert {v["ATEN_CPU_CAPABILITY"] for v in (pinned("GenuineIntel"), pinned(None), pinned("AuthenticAMD", True))
            } == {"avx2"}
    flags = tmp_path / "flags"
    flags.write_text("vendor_id\t: GenuineIntel\nflags\t\t: fpu sse avx2 avx512f avx512bw\n")
    assert has_avx512(str(flags)) and not has_avx512(str(intel)) and not has_avx512(str(tmp_path / "missing"))
