"""After `dvc repro` on a fresh clone: are the committed metrics reproduced? Exit 1 if not.

    python scripts/check_reproduction.py [--against HEAD] [--tolerance T] [--only train distill]
    python scripts/check_reproduction.py --record     # after committing a run: say which machine made it

Compares each variant's F1 and EM in the workspace's metrics/eval.json with the ones committed at
--against, and the train and distill losses. `metrics/machine.json` (written by --record, committed with
the metrics) says which CPU vendor and which pinned kernels (koraft/core/numerics.py) produced them:
- on a CPU of the same vendor with the same pin, every figure must be equal, bit for bit;
- across vendors (Intel against AMD: MKL takes different branches, docs/experiments.md), an F1 or EM may
  move by its own bootstrap half-width (metrics/eval.json's intervals), and the losses are reported
  but not held to anything.
--tolerance overrides both. `--only` checks the named stages' metrics alone, after a `dvc repro` that
stopped there: CI reproduces the stages up to train (.ci/run), so a machine that trains differently shows
up as a red run; the full pipeline (evaluate alone takes about an hour on a 2-core AMD EPYC) would not fit
CI's 90 minutes beside the tests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from koraft.core.numerics import cpu_vendor, has_avx512, pinned  # noqa: E402

MACHINE = "metrics/machine.json"
VARIANTS = ("base", "finetuned", "preferred", "student_base", "distilled")
CHECKED = {"metrics/eval.json": [f"{variant}.{metric}" for variant in VARIANTS for metric in ("f1", "exact_match")],
           "metrics/train.json": ["loss.train_final", "loss.eval_final"],
           "metrics/distill.json": ["loss.train_final", "loss.eval_final"]}


def this_machine() -> dict:
    vendor = cpu_vendor()
    return {"vendor": vendor, "avx512": has_avx512(), "pinned": pinned(vendor, has_avx512())}


def lookup(metrics: dict, dotted: str):
    for key in dotted.split("."):
        metrics = metrics.get(key, {}) if isinstance(metrics, dict) else {}
    return metrics if isinstance(metrics, int | float) else None


def committed(path: str, against: str) -> dict:
    shown = subprocess.run(["git", "show", f"{against}:{path}"], capture_output=True, text=True)
    return json.loads(shown.stdout) if shown.returncode == 0 else {}


def allowed_difference(path: str, key: str, produced_on_same: bool, committed_eval: dict,
                       tolerance: float | None) -> float | None:
    """How far a figure may move: the override, 0 on the same kind of machine, else the metric's half-width."""
    if tolerance is not None:
        return tolerance
    if produced_on_same:
        return 0.0
    if path != "metrics/eval.json":
        return None  # losses across vendors: reported only
    variant, metric = key.split(".")
    return lookup(committed_eval, f"{variant}.intervals.{metric}.half_width")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="HEAD")
    parser.add_argument("--tolerance", type=float, default=None)
    parser.add_argument("--record", action="store_true", help=f"write this machine to {MACHINE} and exit")
    parser.add_argument("--only", nargs="+", choices=[Path(path).stem for path in CHECKED],
                        help="check these stages' metrics alone (the stages `dvc repro` ran)")
    args = parser.parse_args()
    here = this_machine()
    if args.record:
        Path(MACHINE).write_text(json.dumps(here, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"recorded {here['vendor']} ({here['pinned']['MKL_CBWR']}) in {MACHINE}")
        return
    made_on = committed(MACHINE, args.against)
    same = made_on.get("vendor") == here["vendor"] and made_on.get("pinned") == here["pinned"]
    pin = made_on.get("pinned", {})
    print(f"committed figures: {made_on.get('vendor', 'unknown machine')}, MKL {pin.get('MKL_CBWR')}, "
          f"kernels {pin.get('ATEN_CPU_CAPABILITY')}; checked on: {here['vendor']}, MKL "
          f"{here['pinned']['MKL_CBWR']}, kernels {here['pinned']['ATEN_CPU_CAPABILITY']}: "
          + ("the same kind, so bit for bit" if same else "another kind, so within each metric's bootstrap half-width"))
    committed_eval = committed("metrics/eval.json", args.against)
    checked = {path: keys for path, keys in CHECKED.items() if not args.only or Path(path).stem in args.only}
    if args.only:
        print(f"checking {', '.join(checked)} only (--only)")
    failures = 0
    for path, keys in checked.items():
        old_metrics = committed_eval if path == "metrics/eval.json" else committed(path, args.against)
        produced = json.loads(Path(path).read_text(encoding="utf-8"))
        for key in keys:
            old, new = lookup(old_metrics, key), lookup(produced, key)
            if old is None and new is None:
                continue  # a variant neither run evaluated (eval.variants switched it off)
            limit = allowed_difference(path, key, same, committed_eval, args.tolerance)
            moved = None if old is None or new is None else abs(new - old)
            if limit is None and moved is not None:
                print(f"info {path} {key}: committed {old}, reproduced {new} (not held across vendors)")
                continue
            ok = moved is not None and moved <= limit
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {path} {key}: committed {old}, reproduced {new} (allowed {limit})")
    if failures:
        sys.exit(f"{failures} figure(s) not reproduced")
    print("every checked figure reproduced")


if __name__ == "__main__":
    main()
