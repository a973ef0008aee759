"""After `dvc repro` on a fresh clone: are the committed metrics reproduced? Exit 1 if not.

    python scripts/check_reproduction.py [--against HEAD] [--tolerance 0.005]

Compares each variant's F1 and EM in the workspace's metrics/eval.json with the ones committed at
--against, and the train and distill losses; prints every figure and fails on any that moved by more
than the tolerance. CI runs it (.ci/run), so a machine that computes differently shows up as a red run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHECKED = {"metrics/eval.json": [f"{variant}.{metric}" for variant in ("base", "finetuned", "student_base", "distilled")
                                 for metric in ("f1", "exact_match")],
           "metrics/train.json": ["loss.train_final", "loss.eval_final"],
           "metrics/distill.json": ["loss.train_final", "loss.eval_final"]}


def lookup(metrics: dict, dotted: str):
    for key in dotted.split("."):
        metrics = metrics.get(key, {}) if isinstance(metrics, dict) else {}
    return metrics if isinstance(metrics, int | float) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="HEAD")
    parser.add_argument("--tolerance", type=float, default=0.005)
    args = parser.parse_args()
    failures = 0
    for path, keys in CHECKED.items():
        committed = json.loads(subprocess.run(["git", "show", f"{args.against}:{path}"], capture_output=True,
                                              text=True, check=True).stdout)
        produced = json.loads(Path(path).read_text(encoding="utf-8"))
        for key in keys:
            old, new = lookup(committed, key), lookup(produced, key)
            moved = None if old is None or new is None else abs(new - old)
            ok = moved is not None and moved <= args.tolerance
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {path} {key}: committed {old}, reproduced {new}")
    if failures:
        sys.exit(f"{failures} figure(s) not reproduced within {args.tolerance}")
    print(f"every checked figure reproduced within {args.tolerance}")


if __name__ == "__main__":
    main()
