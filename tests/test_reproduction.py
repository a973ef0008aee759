"""scripts/check_reproduction.py, which CI runs after `dvc repro`: bit for bit on the committing kind of CPU,
within each metric's bootstrap half-width on another vendor's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import ROOT, run

from koraft.core.numerics import cpu_vendor, has_avx512, pinned

SCRIPT = ROOT / "scripts" / "check_reproduction.py"
VARIANTS = ("base", "finetuned", "student_base", "distilled")


def write_metrics(folder, f1_shift: float = 0.0, stages: tuple[str, ...] = ("eval", "train", "distill")) -> None:
    eval_metrics = {name: {"f1": 0.5 + f1_shift, "exact_match": 0.4,
                           "intervals": {"f1": {"half_width": 0.05}, "exact_match": {"half_width": 0.05}}}
                    for name in VARIANTS}
    losses = {"loss": {"train_final": 0.3, "eval_final": 0.8 + f1_shift}}
    (folder / "metrics").mkdir(exist_ok=True)
    for name, content in (("eval", eval_metrics), ("train", losses), ("distill", losses)):
        if name in stages:
            (folder / "metrics" / f"{name}.json").write_text(json.dumps(content))


@pytest.fixture
def committed(tmp_path):
    """A repository whose HEAD holds metrics and the machine that made them; returns a function that sets it."""
    run(["git", "init", "-q"], tmp_path)
    write_metrics(tmp_path)

    def made_on(vendor: str | None) -> None:
        subprocess.run([sys.executable, str(SCRIPT), "--record"], cwd=tmp_path, check=True, capture_output=True)
        if vendor is not None:  # as if another kind of CPU had committed them
            machine = json.loads((tmp_path / "metrics" / "machine.json").read_text())
            machine.update(vendor=vendor, pinned=pinned(vendor))
            (tmp_path / "metrics" / "machine.json").write_text(json.dumps(machine))
        run(["git", "add", "-A"], tmp_path)
        run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "metrics"], tmp_path)

    return made_on


def check(folder) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT)], cwd=folder, capture_output=True, text=True)


def test_the_same_kind_of_cpu_must_reproduce_every_figure_bit_for_bit(committed, tmp_path):
    committed(None)
    recorded = json.loads((tmp_path / "metrics" / "machine.json").read_text())
    assert recorded == {"vendor": cpu_vendor(), "avx512": has_avx512(), "pinned": pinned(cpu_vendor(), has_avx512())}
    done = check(tmp_path)
    assert done.returncode == 0 and "the same kind, so bit for bit" in done.stdout, done.stdout + done.stderr
    write_metrics(tmp_path, f1_shift=0.0001)
    done = check(tmp_path)
    assert done.returncode == 1 and "FAIL metrics/eval.json finetuned.f1" in done.stdout


def test_another_vendor_may_move_each_figure_within_its_bootstrap_half_width(committed, tmp_path):
    committed("SomeOtherVendor")
    write_metrics(tmp_path, f1_shift=0.04)
    done = check(tmp_path)
    assert done.returncode == 0 and "another kind" in done.stdout and "not held across vendors" in done.stdout
    write_metrics(tmp_path, f1_shift=0.06)
    done = check(tmp_path)
    assert done.returncode == 1 and "FAIL metrics/eval.json base.f1" in done.stdout


def test_only_checks_the_stages_a_partial_repro_ran(committed, tmp_path):
    """CI reproduces up to distill: evaluate's figures are then the committed file itself, not a reproduction."""
    committed(None)
    write_metrics(tmp_path, f1_shift=0.01, stages=("eval",))  # as if evaluate had given other figures
    done = subprocess.run([sys.executable, str(SCRIPT), "--only", "train", "distill"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "checking metrics/train.json, metrics/distill.json only" in done.stdout
    assert "metrics/eval.json" not in done.stdout.split("only (--only)")[1]
    write_metrics(tmp_path, f1_shift=0.01, stages=("train",))
    done = subprocess.run([sys.executable, str(SCRIPT), "--only", "train", "distill"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 1 and "FAIL metrics/train.json loss.eval_final" in done.stdout
