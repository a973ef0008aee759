"""Comparing runs with DVC: a named sweep on the experiment queue, in a temporary git repository."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, commit_short_runs, make_project, run
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.dvc]


# Two student experiments: the second takes every stage up to the teacher from DVC's run-cache, so the queue
# runs one pipeline and one student (the preset sweep, which retrains everything: the worker test below).
STUDENT_SWEEP = """students:
  - {distill.loss.divergence: forward_kl}
  - {distill.loss.divergence: jsd}
"""


def test_sweep_queues_two_experiments_runs_them_and_shows_both(tmp_path):
    project = make_project(tmp_path / "sweep")
    for name in ("scripts/sweep.py", "scripts/pr_comment.py"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, project / name)
    (project / "sweeps.yaml").write_text(STUDENT_SWEEP, encoding="utf-8")
    run(["git", "add", "-A"], project)
    commit_short_runs(project, "train", "distill", served=False)  # served GGUFs: tests/test_stages.py

    out = run(["python", "scripts/sweep.py", "students", "--poll", "2"], project).stdout
    assert out.count("dvc exp run --queue -S distill.loss.divergence=") == 2 and "dvc queue start -j 1" in out
    table = out[out.index("| Experiment"):]
    assert "distilled.f1" in table and "comparisons.finetuned_vs_base.f1.low" in table
    assert table.count("forward_kl") >= 1 and table.count("jsd") >= 1

    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    experiments = {exp["name"]: exp for baseline in shown for exp in (baseline.get("experiments") or [])}
    assert len(experiments) == 2
    names = {}
    for name, exp in experiments.items():
        assert exp["revs"][0]["error"] is None
        data = exp["revs"][0]["data"]
        names[data["params"]["params.yaml"]["data"]["distill"]["loss"]["divergence"]] = name
        assert "f1" in data["metrics"]["metrics/eval.json"]["data"]["distilled"]
    assert set(names) == {"forward_kl", "jsd"}
    first, second = names["forward_kl"], names["jsd"]
    logs = run(["dvc", "queue", "logs", second], project).stdout
    # The run-cache restores the fine-tuned adapter: DVC skips it for a stage with an uncached output that is
    # neither a metric nor a plot, which the train stage had until 2026-12-03.
    assert "Stage 'train' is cached" in logs and "Stage 'teacher' is cached" in logs
    # and the preference stages, the on-policy answers with them (a distill change cannot touch them)
    assert "Stage 'pairs' is cached" in logs and "Stage 'prefer' is cached" in logs
    assert "Running stage 'distill'" in logs

    diff = json.loads(run(["dvc", "metrics", "diff", first, second, "--json"], project).stdout)
    assert diff["metrics/distill.json"]["loss.train_final"]["diff"] != 0  # another divergence, another loss
    assert "metrics/train.json" not in diff and "metrics/prefer.json" not in diff  # the same SFT and preferred
    assert "distilled.f1" in diff["metrics/eval.json"]

    # The pull-request comment on that pair: headline table, intervals, params diff, full diff.
    text = run(["python", "scripts/pr_comment.py", "--base", first, "--head", second], project).stdout
    lines = text.splitlines()
    assert lines[0] == "<!-- koraft-metrics -->"
    assert f"`{second}` against `{first}`" in lines[1]
    header = lines.index("| variant | F1 | EM | ROUGE-L | chrF | BERTScore-F1 | cosine |")
    rows = [line.split(" | ")[0].removeprefix("| ") for line in lines[header + 2:header + 7]]
    assert rows == ["base", "finetuned", "preferred", "student_base", "distilled"]
    assert any(line.startswith("- finetuned vs base: F1 ") and "95% CI [" in line for line in lines)
    # Per variant, in words: the change of F1 against the base's own predictions, signal or noise.
    verdicts = [line for line in lines if line.startswith("- distilled F1: ")]
    assert len(verdicts) == 1 and any(word in verdicts[0] for word in ("within noise", "better", "worse"))
    assert "paired records" in verdicts[0]
    params = text[text.index("Params changed"):text.index("Every metric that changed")]
    assert "distill.loss.divergence" in params and "forward_kl" in params and "jsd" in params
    assert "| metrics/distill.json" in text[text.index("Every metric that changed"):]
    # RAFT's test conditions, this run's: the oracle, the retriever's top 3 and closed book, on the same questions.
    conditions = [line for line in lines if line.startswith(("| oracle |", "| retrieved k=3 |", "| closed book |"))]
    assert len(conditions) == 3 and all("finetuned − base" not in line for line in conditions)
    assert " ahead" in conditions[1] or " behind" in conditions[1] or "within noise" in conditions[1]

    # A report of the two experiments, read from their commits.
    out = run(["python", "-m", "koraft.publish.report", "students", "--exp", first, second], project).stdout
    assert "report: wrote reports/students.md" in out
    report = (project / "reports/students.md").read_text(encoding="utf-8")
    assert "## Runs compared" in report and "| distill.loss.divergence | forward_kl | jsd |" in report
    moved = report[report.index(f"### {second} against {first}"):]
    assert "- distilled F1: " in moved and "paired records" in moved  # signal or noise, in words
    assert report.count("### Test conditions (RAFT's protocol)") == 2  # one per experiment
    for name in ("runs.png", f"metrics_{first}.png", f"loss_{second}.png"):
        with Image.open(project / "reports/students" / name) as png:
            png.verify()


def test_outputs_round_trip_through_a_local_remote_into_a_fresh_clone(tmp_path):
    project = make_project(tmp_path / "origin")
    commit_short_runs(project, "train", "distill")
    run(["dvc", "repro", "distill"], project)  # every output compared below; export and evaluate add none
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")], project)
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline run"], project)
    assert "pushed" in run(["dvc", "push"], project).stdout

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / "models/train/adapter").exists()
    run(["dvc", "pull", "--with-deps", "distill"], clone)
    outputs = [path.relative_to(project) for folder in ("data/validated", "data/raft", "data/split", "data/distill",
                                                       "models/base", "models/train/adapter", "models/distill/student")
               for path in sorted((project / folder).rglob("*")) if path.is_file() and path.name != ".gitignore"]
    assert len(outputs) > 20
    for relative in outputs:
        assert (clone / relative).read_bytes() == (project / relative).read_bytes(), relative
    assert "Data and pipelines are up to date" in run(["dvc", "status", "distill"], clone).stdout


def test_a_sweep_queued_on_one_machine_runs_on_a_worker_and_is_compared_on_the_first(tmp_path):
    """The coordinator prints a sweep's worker commands; a worker clone runs one with scripts/run_experiment.sh
    (dvc exp run --pull, dvc exp push); the coordinator pulls it back with its outputs. A local bare git repo
    and a local-folder DVC remote stand in for the shared ones."""
    coordinator = make_project(tmp_path / "coordinator")
    for name in ("scripts/run_experiment.sh", "scripts/sweep.py", "sweeps.yaml"):
        (coordinator / name).parent.mkdir(exist_ok=True)
        shutil.copy2(ROOT / name, coordinator / name)
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "dvc-store")], coordinator)
    run(["git", "add", "-A"], coordinator)
    commit_short_runs(coordinator, "train", "distill", served=False)
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
    assert "Running stage 'validate'" not in output and "Pulling data for stage: 'split'" in output  # pulled instead
    # base's params name the presets it builds (model.preset): tiny-s reruns it, and it builds the same group, so
    # the folder is the one the coordinator pushed.
    assert "Running stage 'base'" in output and "Running stage 'train'" in output

    def base_folder(project: Path) -> str:
        lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))
        return lock["stages"]["base"]["outs"][0]["md5"]

    assert base_folder(worker) == base_folder(coordinator)
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
