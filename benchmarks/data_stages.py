"""Time the data stages on N synthetic Korean records; print records/s and peak memory per stage.

    python benchmarks/data_stages.py [--records 100000 [1000000 ...]] [--terms bigrams [morphemes]] [--keep DIR]

Each stage runs as its own process, exactly as `dvc repro` runs it, in a scratch project that
holds only the synthetic input; peak memory is that process's maximum resident set size.
With several sizes it ends with the largest over the smallest: time should grow about linearly,
peak memory far slower, since records stream from disk to disk.
raft (bm25) runs once per `--terms` kind (raft.bm25.terms; morphemes was the default before
bigrams, so `--terms bigrams morphemes` prints the old and the new side by side). Target on the
2-core machine: the default pipeline (validate, split, raft with bm25) at 1,000,000 records in at
most 5 minutes, each stage within 2 GiB.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from koraft.data.bm25 import TERMS
from koraft.data.synth import synthetic_corpus

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS_PER_DOC = 4


def write_corpus(path: Path, records: int) -> None:
    corpus = synthetic_corpus((records + QUESTIONS_PER_DOC - 1) // QUESTIONS_PER_DOC, QUESTIONS_PER_DOC, seed=1)
    with open(path, "w", encoding="utf-8") as handle:
        written = 0
        for _, qas in corpus:
            for qa in qas:
                if written == records:
                    return
                handle.write(json.dumps(qa.as_record(), ensure_ascii=False) + "\n")
                written += 1


# Runs a stage script and records its own peak (VmHWM): ru_maxrss would also count the pages this
# benchmark process held when it forked the child, since Linux carries them over the exec.
PEAK_WRAPPER = """
import runpy, sys
root, report, module, *arguments = sys.argv[1:]
sys.path.insert(0, root)
sys.argv = [module, *arguments]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    status = open("/proc/self/status").read()
    open(report, "w").write(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM:")))
"""


def run_stage(project: Path, stage: str) -> tuple[float, float]:
    """Run one stage with the arguments of its cmd in dvc.yaml; return (seconds, peak RSS in MiB)."""
    report = project / f".peak-{stage}"
    command = shlex.split(yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"][stage]["cmd"])
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, str(ROOT), str(report), *command[2:]],
                            cwd=project, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"stage {stage} failed")
    return elapsed, int(report.read_text()) / 1024  # VmHWM is in KiB


def stages(terms: list[str]) -> list[tuple[str, str, str | None, str | None]]:
    """(label, stage, distractor source, bm25 terms) in the order they run."""
    rows = [("validate", "validate", None, None), ("split", "split", None, None),
            ("raft (random)", "raft", "random", None)]
    return rows + [(f"raft (bm25, {kind})" if len(terms) > 1 else "raft (bm25)", "raft", "bm25", kind)
                   for kind in terms]


def measure(records: int, keep: Path | None, terms: list[str]) -> list[tuple[str, float, float]]:
    """(stage label, seconds, peak MiB) for each data stage on `records` synthetic records."""
    project = keep or Path(tempfile.mkdtemp(prefix="koraft-bench-"))
    project.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["validate"]["inputs"] = [{"path": "data/raw/synthetic.jsonl", "format": "jsonl"}]

    start = time.perf_counter()
    (project / "data/raw").mkdir(parents=True, exist_ok=True)
    write_corpus(project / "data/raw/synthetic.jsonl", records)
    size = (project / "data/raw/synthetic.jsonl").stat().st_size / 2**20
    print(f"\ngenerated {records:,} records ({size:.0f} MiB) in {time.perf_counter() - start:.1f}s", flush=True)

    rows = []
    for label, stage, source, kind in stages(terms):
        if source:
            params["raft"]["distractor_source"] = source
        if kind:
            params["raft"]["bm25"]["terms"] = kind
        (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
        seconds, peak = run_stage(project, stage)
        rows.append((label, seconds, peak))
        print(f"  {label}: {seconds:.1f}s, {peak:.0f} MiB", flush=True)

    print(f"\n{'stage':<24}{'seconds':>10}{'records/s':>12}{'peak MiB':>10}")
    for label, seconds, peak in rows:
        print(f"{label:<24}{seconds:>10.1f}{records / seconds:>12,.0f}{peak:>10.0f}")
    default = [rows[0], rows[1], rows[3]]  # validate, split, raft with bm25 over the first --terms
    total = sum(seconds for _, seconds, _ in default)
    print(f"{'default pipeline':<24}{total:>10.1f}{'':>12}{max(peak for *_, peak in default):>10.0f}"
          f"   (validate, split, {rows[3][0]})")
    if len(terms) > 1:
        print(f"raft (bm25): {terms[1]} / {terms[0]} time: {rows[4][1] / rows[3][1]:.1f}x")
    validate = json.loads((project / "metrics/validate.json").read_text())
    print(f"{validate['kept']:,} kept, {validate['rejected']:,} rejected, {validate['documents']:,} documents")
    if not keep:
        shutil.rmtree(project)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, nargs="+", default=[100_000])
    parser.add_argument("--terms", nargs="+", choices=TERMS, default=["bigrams"], help="raft.bm25.terms to time")
    parser.add_argument("--keep", type=Path, help="keep the scratch project here (one size only)")
    args = parser.parse_args()
    if args.keep and len(args.records) > 1:
        raise SystemExit("--keep takes one --records size")
    results = {records: measure(records, args.keep, args.terms) for records in args.records}
    if len(results) > 1:
        small, large = min(results), max(results)
        print(f"\n{large:,} vs {small:,} records ({large / small:.0f}x the input):")
        print(f"{'stage':<24}{'time x':>10}{'peak x':>10}")
        for (label, s_small, p_small), (_, s_large, p_large) in zip(results[small], results[large], strict=True):
            print(f"{label:<24}{s_large / s_small:>10.1f}{p_large / p_small:>10.2f}")


if __name__ == "__main__":
    main()
