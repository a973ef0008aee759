"""The stage scripts and the DVC pipeline, run for real in a temporary git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, set_dotted

PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "koraft", "configs", "data/raw", "data/predictions",
                 ".dvc/config", ".dvcignore"]
OUTPUTS = ["data/validated/records.jsonl", "data/validated/rejects.jsonl", "data/raft/raft.jsonl",
           "data/split/train.jsonl", "data/split/val.jsonl", "data/split/test.jsonl",
           "metrics/validate.json", "metrics/raft.json", "metrics/split.json"]


def env() -> dict:
    # `dvc` and the stages' `python` must be this interpreter's, whatever PATH the caller had.
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and result.returncode:
        raise AssertionError(f"{args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def make_project(path: Path) -> Path:
    """A fresh git + DVC repository holding the project's pipeline files, as a clone would."""
    path.mkdir(parents=True)
    for name in PROJECT_FILES:
        source, target = ROOT / name, path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    (path / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    run(["git", "init", "-q"], path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project"], path)
    return path


def edit_params(project: Path, change) -> None:
    """Apply change(params) to the project's params.yaml."""
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    change(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")


def set_param(project: Path, dotted: str, value) -> None:
    edit_params(project, lambda params: set_dotted(params, dotted, value))


def commit_short_runs(project: Path, *sections: str) -> None:
    """Three training steps for each section, committed so `dvc exp run` starts from them."""
    for section in sections:
        for key, value in {"max_steps": 3, "eval_steps": 2, "save_steps": 2, "logging_steps": 1}.items():
            set_param(project, f"{section}.args.{key}", value)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "short runs"], project)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("pipeline") / "project")
    run(["dvc", "repro", "split"], project)
    return project


def test_dvc_repro_split_builds_every_output(reproduced):
    for name in OUTPUTS:
        assert (reproduced / name).stat().st_size > 0, name
    validate = json.loads((reproduced / "metrics/validate.json").read_text())
    records = (reproduced / "data/validated/records.jsonl").read_text().splitlines()
    rejects = (reproduced / "data/validated/rejects.jsonl").read_text().splitlines()
    assert validate["raw"] == len(records) + len(rejects) == validate["kept"] + validate["rejected"]
    assert validate["raw"] >= 300 and validate["documents"] >= 100
    split = json.loads((reproduced / "metrics/split.json").read_text())
    assert set(split["leakage"].values()) == {0}
    status = run(["dvc", "status", "split"], reproduced)
    assert "up to date" in status.stdout
    assert "Data and pipelines are up to date" in run(["dvc", "repro", "split"], reproduced).stdout


def test_committed_lock_matches_a_fresh_run(reproduced):
    """dvc.lock in git must be what the current code and data produce, so a clone's first
    `dvc repro` changes nothing tracked: a stale lock or a nondeterministic output fails here."""
    fresh = yaml.safe_load((reproduced / "dvc.lock").read_text())["stages"]
    committed = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    # The data stages are byte-deterministic; train output also depends on the machine's floating point.
    for stage in fresh:
        assert fresh[stage] == committed[stage], f"dvc.lock is stale for {stage}: run `dvc repro` and commit"
    for name in ("metrics/validate.json", "metrics/raft.json", "metrics/split.json"):
        assert (reproduced / name).read_bytes() == (ROOT / name).read_bytes(), name


def test_same_params_and_data_give_byte_identical_outputs(reproduced, tmp_path):
    again = make_project(tmp_path / "again")
    run(["dvc", "repro", "split"], again)
    for name in OUTPUTS:
        assert (again / name).read_bytes() == (reproduced / name).read_bytes(), name


def test_changed_param_reruns_only_downstream_stages(reproduced, tmp_path):
    project = tmp_path / "changed"
    shutil.copytree(reproduced, project)
    set_param(project, "raft.p_golden", 1.0)
    out = run(["dvc", "repro", "split"], project).stdout
    assert "Stage 'validate' didn't change" in out and "Running stage 'raft'" in out
    split = json.loads((project / "metrics/split.json").read_text())
    assert set(split["golden_included_share"].values()) == {1.0}


def test_bad_param_fails_before_work_with_one_line(tmp_path):
    project = make_project(tmp_path / "bad")
    set_param(project, "raft.p_golden", 1.5)
    run(["python", "stages/validate.py"], project)
    result = run(["python", "stages/raft.py"], project, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "raft: error: params.yaml: raft.p_golden: must be in [0.0, 1.0], got 1.5"
    assert not (project / "data/raft/raft.jsonl").exists()


@pytest.mark.parametrize("content, expected", [
    (None, "data/raw/extra.json: file not found"),
    ('[{"question": "q", "context": "c", "answer": "a"},\n{"question": ', "data/raw/extra.json:2: invalid JSON"),
])
def test_unreadable_input_file_is_one_clear_line(tmp_path, content, expected):
    project = make_project(tmp_path / "broken")
    if content is not None:
        (project / "data/raw/extra.json").write_text(content, encoding="utf-8")
    edit_params(project, lambda params: params["validate"]["inputs"].append({"path": "data/raw/extra.json"}))
    result = run(["python", "stages/validate.py"], project, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"validate: error: {expected}") and result.stderr.count("\n") == 1


def test_train_stage_and_a_preset_experiment(reproduced, tmp_path):
    project = tmp_path / "train"
    shutil.copytree(reproduced, project)
    commit_short_runs(project, "train")
    run(["dvc", "repro", "train"], project)
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["train"]
    adapter = next(out for out in lock["outs"] if out["path"] == "models/train/adapter")
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["model"]["preset"] == "tiny-m" and metrics["steps"] == 3
    assert (project / "metrics/train/plots/metrics/train/loss.tsv").exists()
    assert not (project / "checkpoints/train").exists()
    assert "Data and pipelines are up to date" in run(["dvc", "repro", "train"], project).stdout

    run(["dvc", "exp", "run", "train", "-S", "model.preset=tiny-s"], project)  # up to train, not the whole pipeline
    experiment = json.loads((project / "metrics/train.json").read_text())
    assert experiment["model"]["preset"] == "tiny-s"
    assert experiment["parameters"]["total"] < metrics["parameters"]["total"]
    assert experiment["prompts_sha256"] == metrics["prompts_sha256"]  # same tokenizer and template
    new_lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["train"]
    new_adapter = next(out for out in new_lock["outs"] if out["path"] == "models/train/adapter")
    assert new_adapter["md5"] != adapter["md5"]
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    assert "tiny-s" in json.dumps(shown)


@pytest.mark.parametrize("stage, key, value, expected", [
    ("train", "model.preset", "exaone-5", "params.yaml: model.preset: unknown preset 'exaone-5'"),
    ("distill", "distill.loss.divergence", "kl", "params.yaml: distill.loss.divergence: must be one of forward_kl"),
])
def test_model_stage_bad_param_is_one_line(stage, key, value, expected, reproduced, tmp_path):
    project = tmp_path / f"bad-{stage}"
    shutil.copytree(reproduced, project)
    set_param(project, key, value)
    result = run(["python", f"stages/{stage}.py"], project, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{stage}: error: {expected}") and result.stderr.count("\n") == 1


def test_distill_stage_reuses_the_teacher_cache_across_student_experiments(reproduced, tmp_path):
    project = tmp_path / "distill"
    shutil.copytree(reproduced, project)
    commit_short_runs(project, "train", "distill")
    out = run(["dvc", "repro", "distill"], project).stdout
    assert all(f"Running stage '{stage}'" in out for stage in ("base", "train", "teacher", "distill"))
    metrics = json.loads((project / "metrics/distill.json").read_text())
    assert metrics["student"]["preset"] == "tiny-s" and metrics["teacher"]["model"] == "tiny-m"
    assert metrics["teacher"]["mode"] == "offline" and metrics["steps"] == 3
    assert metrics["agreement"]["before"] is not None and metrics["agreement"]["after"] is not None
    cache = json.loads((project / "data/distill/teacher/manifest.json").read_text())
    assert cache["splits"]["train"]["samples"] == metrics["samples"]["train"]["samples"]
    assert (project / "models/distill/student/koraft_manifest.json").exists()
    assert any((project / "models/distill/student").glob("*model.safetensors"))  # adapter or full weights
    assert (project / "metrics/distill/plots/metrics/train/kd_loss.tsv").exists()
    assert "Data and pipelines are up to date" in run(["dvc", "repro", "distill"], project).stdout

    out = run(["dvc", "exp", "run", "distill", "-S", "distill.student.preset=tiny-m"], project).stdout
    assert "Stage 'teacher' didn't change" in out and "Running stage 'distill'" in out
    experiment = json.loads((project / "metrics/distill.json").read_text())
    assert experiment["student"]["preset"] == "tiny-m"
    assert experiment["parameters"]["total"] > metrics["parameters"]["total"]


def test_evaluate_stage_scores_every_variant_then_a_predictions_file(reproduced, tmp_path):
    project = tmp_path / "evaluate"
    shutil.copytree(reproduced, project)
    set_param(project, "eval.bootstrap.resamples", 200)
    commit_short_runs(project, "train", "distill")
    out = run(["dvc", "repro", "evaluate"], project).stdout
    assert "Running stage 'evaluate'" in out and "evaluate: finetuned_vs_base: F1" in out
    metrics = json.loads((project / "metrics/eval.json").read_text())
    assert {"base", "finetuned", "student_base", "distilled", "comparisons"} <= set(metrics)
    review = (project / "metrics/eval/predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(review) == metrics["scoring"]["samples"] == metrics["scoring"]["test_records"]
    table = run(["dvc", "metrics", "show", "--md"], project).stdout
    assert "finetuned.f1" in table and "comparisons.finetuned_vs_base.f1.low" in table
    assert "Data and pipelines are up to date" in run(["dvc", "repro", "evaluate"], project).stdout

    test = [json.loads(line) for line in (project / "data/split/test.jsonl").read_text().splitlines()]
    (project / "data/predictions/api.jsonl").write_text("".join(
        json.dumps({"id": row["id"], "prediction": f"<ANSWER>: {row['answer']}"}, ensure_ascii=False) + "\n"
        for row in test), encoding="utf-8")
    set_param(project, "eval.predictions_file", "data/predictions/api.jsonl")
    out = run(["dvc", "repro", "evaluate"], project).stdout
    assert "Stage 'train' didn't change" in out and "Running stage 'evaluate'" in out
    scored = json.loads((project / "metrics/eval.json").read_text())
    assert scored["api"]["exact_match"] == 1.0 and "finetuned" not in scored
