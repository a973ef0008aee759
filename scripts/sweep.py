"""Run a named sweep from sweeps.yaml on DVC's experiment queue, then print the comparison table.

    python scripts/sweep.py presets              # queue every entry, run them one at a time, show
    python scripts/sweep.py presets --dry-run    # print the dvc commands only
    python scripts/sweep.py --list               # the sweeps and their entries
    python scripts/sweep.py presets --workers origin   # one worker command per entry, run nothing here

Each entry is one experiment: `dvc exp run --queue -S key=value ...`. The queue runs with one
worker (`dvc queue start -j 1`): an experiment trains on the whole machine (its one GPU, or all
CPU cores), and two at once would only compete for that memory and compute. Nothing here replaces
DVC: afterwards `dvc exp show`, `dvc exp apply` and `dvc exp branch` work as usual.

With --workers GIT_REMOTE the sweep is spread over machines instead: it prints, per entry, the
scripts/run_experiment.sh line a worker clone runs (it pushes the result to GIT_REMOTE and the DVC
remote), and the commands that collect the results here.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

SWEEPS = Path("sweeps.yaml")
MAIN_METRIC = "metrics/eval.json:finetuned.f1"
# A sweep over the prefer section leaves the fine-tuned model as it is: its table sorts by the preferred one.
PREFERRED_METRIC = "metrics/eval.json:preferred.f1"
# The table: the sweep's own keys, then the columns that matter for every comparison.
KEY_COLUMNS = [
    "Experiment", r"params\.yaml:model\.preset", r"train\.method", r"distill\.student\.preset",
    r"(finetuned|preferred|distilled)\.(f1|rougeL|chrf|bertscore_f1)",
    r"comparisons\.(finetuned_vs_base|preferred_vs_finetuned)\.f1\.(low|high)",
    r"(finetuned|preferred)\.distractor_answers\.(wrong|from_distractor)",
]


def read_sweeps(path: Path = SWEEPS) -> dict[str, list[dict]]:
    sweeps = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(sweeps, dict) or not all(isinstance(entries, list) and entries and
                                                all(isinstance(e, dict) and e for e in entries)
                                                for entries in sweeps.values()):
        raise SystemExit(f"{path}: expected NAME: [ {{param.key: value, ...}}, ... ]")
    return sweeps


def queue_command(entry: dict) -> list[str]:
    command = ["dvc", "exp", "run", "--queue"]
    for key, value in entry.items():  # DVC reads the value as YAML: JSON numbers and booleans are YAML too
        command += ["-S", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return command


def worker_command(entry: dict, remote: str) -> list[str]:
    """The line a worker runs for one entry: the same -S arguments as the local queue."""
    return ["bash", "scripts/run_experiment.sh", remote, *queue_command(entry)[4:]]


def show_command(entries: list[dict]) -> list[str]:
    keys = list(dict.fromkeys(k for entry in entries for k in entry))
    swept = [key.replace(".", r"\.") for key in keys]
    keep = "|".join(KEY_COLUMNS + [f"(params\\.yaml:)?{key}" for key in swept])
    metric = PREFERRED_METRIC if all(key.startswith("prefer.") for key in keys) else MAIN_METRIC
    return ["dvc", "exp", "show", "--md", "--drop", ".*", "--keep", keep, "--sort-by", metric, "--sort-order", "desc"]


def wait_for_queue(poll_seconds: float) -> str:
    """Block until no queued or running experiment is left; returns the final `dvc queue status`."""
    while True:
        status = subprocess.run(["dvc", "queue", "status"], capture_output=True, text=True, check=True).stdout
        if not any(word in line for line in status.splitlines() for word in (" Queued", " Running")):
            return status
        time.sleep(poll_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between queue checks")
    parser.add_argument("--workers", metavar="GIT_REMOTE", help="print the commands for worker machines")
    args = parser.parse_args()
    sweeps = read_sweeps()
    if args.list or not args.name:
        for name, entries in sweeps.items():
            print(f"{name}: " + "; ".join(", ".join(f"{k}={v}" for k, v in e.items()) for e in entries))
        return
    if args.name not in sweeps:
        raise SystemExit(f"{SWEEPS}: no sweep named {args.name!r}; sweeps are {', '.join(sweeps)}")
    entries = sweeps[args.name]
    if args.workers:
        print(f"# push this commit to {args.workers} (and `dvc push`), then run one line on each worker clone:")
        for entry in entries:
            print(shlex.join(worker_command(entry, args.workers)))
        print("# then, here:")
        print(f"dvc exp pull {args.workers}")
        print(shlex.join(show_command(entries)))
        return
    commands = [queue_command(entry) for entry in entries] + [["dvc", "queue", "start", "-j", "1"]]
    for command in commands:
        print("$", " ".join(command), flush=True)
        if not args.dry_run:
            subprocess.run(command, check=True)
    if args.dry_run:
        print("$", " ".join(show_command(entries)))
        return
    status = wait_for_queue(args.poll)
    print(status)
    subprocess.run(show_command(entries), check=True)
    if " Failed" in status:
        sys.exit("sweep: some experiments failed; `dvc queue logs NAME` shows why")


if __name__ == "__main__":
    main()
