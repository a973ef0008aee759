"""Which environment changes the bits of a training run, with and without koraft's pinned numerics.

    python benchmarks/numerics.py [--steps 12] [--base-models models/base]

Trains LoRA on tiny-m for a few steps on the shipped RAFT train split, once per environment, each in
a fresh process (the variables act when torch loads), and prints each adapter's SHA-256 prefix, the
final train loss, the thread count, the kernel family torch used and the wall time. Rows with equal
hashes are bitwise equal. Unpinned rows set KORAFT_NATIVE_NUMERICS=1; pinned rows import `stages`
first, as every stage does (koraft/core/numerics.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS = {
    "native, 2 threads": {"KORAFT_NATIVE_NUMERICS": "1", "OMP_NUM_THREADS": "2"},
    "native, 2 threads again": {"KORAFT_NATIVE_NUMERICS": "1", "OMP_NUM_THREADS": "2"},
    "native, 1 thread": {"KORAFT_NATIVE_NUMERICS": "1", "OMP_NUM_THREADS": "1"},
    "native, ATEN_CPU_CAPABILITY=avx2": {"KORAFT_NATIVE_NUMERICS": "1", "ATEN_CPU_CAPABILITY": "avx2"},
    "native, MKL_CBWR=AVX2,STRICT": {"KORAFT_NATIVE_NUMERICS": "1", "MKL_CBWR": "AVX2,STRICT"},
    "pinned, 2 threads": {"OMP_NUM_THREADS": "2"},
    "pinned, 1 thread": {"OMP_NUM_THREADS": "1"},
    "pinned, asked for other kernels": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AVX2"},
}
WORKER = """
import json, sys
import stages  # noqa: F401  (pins the numerics unless KORAFT_NATIVE_NUMERICS=1)
import torch
from pathlib import Path
from koraft.core.config import load_params
from koraft.core.jsonl import read_jsonl
from koraft.training.config import train_section, train_settings
from koraft.training.train import TrainPaths, train
job = json.loads(sys.argv[1])
params = load_params()
section = train_section(params)
section["args"].update(max_steps=job["steps"], eval_steps=job["steps"], save_steps=job["steps"], logging_steps=1)
out = Path(job["out"])
metrics = train(list(read_jsonl("data/raft/train.jsonl"))[:96], list(read_jsonl("data/raft/val.jsonl"))[:16],
                train_settings(params["model"], section),
                TrainPaths(adapter=out / "adapter", checkpoints=out / "checkpoints", plots=out / "plots",
                           tiny_models=Path(job["base_models"])))
print(json.dumps({"loss": metrics["loss"]["train_final"], "threads": torch.get_num_threads(),
                  "kernels": torch.backends.cpu.get_cpu_capability()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--base-models", default="models/base")
    args = parser.parse_args()
    print("| environment | adapter sha256 | train loss | threads | kernels | seconds |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for index, (name, variables) in enumerate(ENVIRONMENTS.items()):
            env = {key: value for key, value in os.environ.items() if key != "KORAFT_NATIVE_NUMERICS"}
            out = Path(scratch) / str(index)
            job = {"steps": args.steps, "out": str(out), "base_models": str(Path(args.base_models).resolve())}
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", WORKER, json.dumps(job)], cwd=ROOT, env={**env, **variables},
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                sys.exit(f"{name}: failed\n{done.stderr[-2000:]}")
            info = json.loads(done.stdout.strip().splitlines()[-1])
            digest = hashlib.sha256((out / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()[:12]
            print(f"| {name} | {digest} | {info['loss']} | {info['threads']} | {info['kernels']} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
