"""Comparing runs with DVC: a named sweep on the experiment queue, in a temporary git repository."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import ROOT, commit_short_runs, make_project, run, set_param
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.dvc]


def test_sweep_queues_two_presets_runs_them_and_shows_both(tmp_path):
    project = make_project(tmp_path / "sweep")
    for name in ("sweeps.yaml", "scripts/sweep.py", "scripts/pr_comment.py"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, project / name)
    set_param(project, "eval.bootstrap.resamples", 200)
    run(["git", "add", "-A"], project)
    commit_short_runs(project, "train", "distill")

    out = run(["python", "scripts/sweep.py", "presets", "--poll", "2"], project).stdout
    assert out.count("dvc exp run --queue -S model.preset=") == 2 and "dvc queue start -j 1" in out
    table = out[out.index("| Experiment"):]
    assert "finetuned.f1" in table and "comparisons.finetuned_vs_base.f1.low" in table
    assert table.count("tiny-m") >= 1 and table.count("tiny-s") >= 1

    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    experiments = {exp["name"]: exp for baseline in shown for exp in (baseline.get("experiments") or [])}
    assert len(experiments) == 2
    presets = {}
    for name, exp in experiments.items():
        assert exp["revs"][0]["error"] is None
        data = exp["revs"][0]["data"]
        presets[data["params"]["params.yaml"]["data"]["model"]["preset"]] = name
        assert "f1" in data["metrics"]["metrics/eval.json"]["data"]["finetuned"]
    assert set(presets) == {"tiny-m", "tiny-s"}

    diff = json.loads(run(["dvc", "metrics", "diff", presets["tiny-m"], presets["tiny-s"], "--json"], project).stdout)
    assert diff["metrics/train.json"]["parameters.total"]["diff"] != 0  # tiny-s is the smaller model
    assert "finetuned.f1" in diff["metrics/eval.json"]

    # The pull-request comment on that pair: headline table, intervals, params diff, full diff.
    text = run(["python", "scripts/pr_comment.py", "--base", presets["tiny-m"], "--head", presets["tiny-s"]],
               project).stdout
    lines = text.splitlines()
    assert lines[0] == "<!-- koraft-metrics -->"
    assert f"`{presets['tiny-s']}` against `{presets['tiny-m']}`" in lines[1]
    header = lines.index("| variant | F1 | EM | ROUGE-L | chrF | BERTScore-F1 | cosine |")
    rows = [line.split(" | ")[0].removeprefix("| ") for line in lines[header + 2:header + 6]]
    assert rows == ["base", "finetuned", "student_base", "distilled"]
    assert any(line.startswith("- finetuned vs base: F1 ") and "95% CI [" in line for line in lines)
    # Per variant, in words: the change of F1 against the base's own predictions, signal or noise.
    verdicts = [line for line in lines if line.startswith("- finetuned F1: ")]
    assert len(verdicts) == 1 and any(word in verdicts[0] for word in ("within noise", "better", "worse"))
    assert "paired records" in verdicts[0]
    params = text[text.index("Params changed"):text.index("Every metric that changed")]
    assert "model.preset" in params and "tiny-m" in params and "tiny-s" in params
    assert "| metrics/train.json" in text[text.index("Every metric that changed"):]

    # A report of the two experiments, read from their commits.
    out = run(["python", "-m", "koraft.publish.report", "presets", "--exp", presets["tiny-m"], presets["tiny-s"]],
              project).stdout
    assert "report: wrote reports/presets.md" in out
    report = (project / "reports/presets.md").read_text(encoding="utf-8")
    assert "## Runs compared" in report and "| model.preset | tiny-m | tiny-s |" in report  # params that differ
    moved = report[report.index(f"### {presets['tiny-s']} against {presets['tiny-m']}"):]
    assert "- finetuned F1: " in moved and "paired records" in moved  # signal or noise, in words
    for name in ("runs.png", f"metrics_{presets['tiny-m']}.png", f"loss_{presets['tiny-s']}.png"):
        with Image.open(project / "reports/presets" / name) as png:
            png.verify()


def test_outputs_round_trip_through_a_local_remote_into_a_fresh_clone(tmp_path):
    project = make_project(tmp_path / "origin")
    commit_short_runs(project, "train", "distill")
    set_param(project, "eval.bootstrap.resamples", 200)
    run(["dvc", "repro"], project)
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")], project)
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline run"], project)
    assert "pushed" in run(["dvc", "push"], project).stdout

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / "models/train/adapter").exists()
    run(["dvc", "pull"], clone)
    outputs = [path.relative_to(project) for folder in ("data/validated", "data/raft", "data/split", "data/distill",
                                                       "models/base", "models/train/adapter", "models/distill/student")
               for path in sorted((project / folder).rglob("*")) if path.is_file() and path.name != ".gitignore"]
    assert len(outputs) > 20
    for relative in outputs:
        assert (clone / relative).read_bytes() == (project / relative).read_bytes(), relative
    assert "Data and pipelines are up to date" in run(["dvc", "status"], clone).stdout


def test_a_sweep_queued_on_one_machine_runs_on_a_worker_and_is_compared_on_the_first(tmp_path):
    """The coordinator prints a sweep's worker commands; a worker clone runs one with scripts/run_experiment.sh
    (dvc exp run --pull, dvc exp push); the coordinator pulls it back with its outputs. A local bare git repo
    and a local-folder DVC remote stand in for the shared ones."""
    coordinator = make_project(tmp_path / "coordinator")
    for name in ("scripts/run_experiment.sh", "scripts/sweep.py", "sweeps.yaml"):
        (coordinator / name).parent.mkdir(exist_ok=True)
        shutil.copy2(ROOT / name, coordinator / name)
    set_param(coordinator, "eval.bootstrap.resamples", 200)
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "dvc-store")], coordinator)
    run(["git", "add", "-A"], coordinator)
    commit_short_runs(coordinator, "train", "distill")
    run(["dvc", "repro", "split", "base"], coordinator)  # the shared inputs every experiment starts from
    run(["dvc", "push"], coordinator)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "data and base models"], coordinator)
    run(["git", "init", "-q", "--bare", str(tmp_path / "shared.git")], tmp_path)
    run(["git", "remote", "add", "origin", str(tmp_path / "shared.git")], coordinator)
    run(["git", "push", "-q", "origin", "HEAD"], coordinator)
    printed = run(["python", "scripts/sweep.py", "presets", "--workers", "origin"], coordinator).stdout.splitlines()
    worker_lines = [line for line in printed if line.startswith("bash scripts/run_experiment.sh origin")]
    assert worker_lines == ["bash scripts/run_experiment.sh origin -S model.preset=tiny-m",
                            "bash scripts/run_experiment.sh origin -S model.preset=tiny-s"]

    worker = tmp_path / "worker"
    run(["git", "clone", "-q", str(tmp_path / "shared.git"), str(worker)], tmp_path)
    run(["git", "config", "user.name", "worker"], worker)  # dvc exp run commits as this identity
    run(["git", "config", "user.email", "worker@example.com"], worker)
    output = run(worker_lines[1].split(), worker).stdout
    assert "Running stage 'validate'" not in output and "Running stage 'base'" not in output  # pulled instead
    assert "Running stage 'train'" in output
    listed = run(["dvc", "exp", "list", "origin", "--name-only"], worker).stdout.split()
    assert len(listed) == 1

    run(["dvc", "exp", "pull", "origin"], coordinator)  # every experiment of this commit, with its outputs
    shown = json.loads(run(["dvc", "exp", "show", "--json"], coordinator).stdout)
    experiment = next(exp for baseline in shown for exp in (baseline.get("experiments") or [])
                      if exp["name"] == listed[0])
    data = experiment["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["model"]["preset"] == "tiny-s"
    assert "f1" in data["metrics"]["metrics/eval.json"]["data"]["finetuned"]
    run(["dvc", "exp", "apply", listed[0]], coordinator)
    for name in ("models/train/adapter/adapter_model.safetensors", "models/distill/student/adapter_model.safetensors",
                 "metrics/eval.json"):
        assert (coordinator / name).read_bytes() == (worker / name).read_bytes(), name
