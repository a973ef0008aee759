"""Time the data stages on N synthetic Korean records; print records/s and peak memory per stage.

    python benchmarks/data_stages.py [--records 100000] [--keep DIR]

Each stage runs as its own process, exactly as `dvc repro` runs it, in a scratch project that
holds only the synthetic input; peak memory is that process's maximum resident set size.
Target on the 2-core machine: all stages for 100,000 records in under 3 minutes, under 4 GiB each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from koraft.synth import generate

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS_PER_DOC = 4


def write_corpus(path: Path, records: int) -> None:
    corpus = generate((records + QUESTIONS_PER_DOC - 1) // QUESTIONS_PER_DOC, QUESTIONS_PER_DOC, seed=1)
    with open(path, "w", encoding="utf-8") as handle:
        written = 0
        for _, qas in corpus:
            for qa in qas:
                if written == records:
                    return
                handle.write(json.dumps(qa.as_record(), ensure_ascii=False) + "\n")
                written += 1


def run_stage(project: Path, stage: str) -> tuple[float, float]:
    """Run one stage script; return (seconds, peak RSS in MiB)."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=project,
                               stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {stage} failed")
    return elapsed, usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="keep the scratch project here instead of deleting it")
    args = parser.parse_args()

    project = args.keep or Path(tempfile.mkdtemp(prefix="koraft-bench-"))
    project.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["validate"]["inputs"] = [{"path": "synthetic.jsonl", "format": "jsonl"}]

    start = time.perf_counter()
    write_corpus(project / "synthetic.jsonl", args.records)
    size = (project / "synthetic.jsonl").stat().st_size / 2**20
    print(f"generated {args.records:,} records ({size:.0f} MiB) in {time.perf_counter() - start:.1f}s")

    rows = []
    for label, stage, source in [("validate", "validate", None), ("raft (random)", "raft", "random"),
                                 ("raft (bm25)", "raft", "bm25"), ("split", "split", None)]:
        if source:
            params["raft"]["distractor_source"] = source
        (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
        seconds, peak = run_stage(project, stage)
        rows.append((label, seconds, peak))

    print(f"\n{'stage':<16}{'seconds':>10}{'records/s':>12}{'peak MiB':>10}")
    for label, seconds, peak in rows:
        print(f"{label:<16}{seconds:>10.1f}{args.records / seconds:>12,.0f}{peak:>10.0f}")
    total = sum(seconds for _, seconds, _ in rows)
    print(f"{'all four':<16}{total:>10.1f}{'':>12}{max(peak for *_, peak in rows):>10.0f}")
    validate = json.loads((project / "metrics/validate.json").read_text())
    print(f"\n{validate['kept']:,} kept, {validate['rejected']:,} rejected, {validate['documents']:,} documents")
    if not args.keep:
        shutil.rmtree(project)


if __name__ == "__main__":
    main()
