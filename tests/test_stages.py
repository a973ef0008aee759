"""The stage scripts and the DVC pipeline, run for real in a temporary git repository."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, commit_short_runs, edit_params, make_project, run, set_param, stage

pytestmark = [pytest.mark.slow, pytest.mark.dvc]

OUTPUTS = ["data/validated/records.jsonl", "data/validated/rejects.jsonl",
           *(f"data/{stage}/{name}.jsonl" for stage in ("split", "raft") for name in ("train", "val", "test")),
           "metrics/validate.json", "metrics/split.json", "metrics/raft.json"]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("pipeline") / "project")
    run(["dvc", "repro", "raft"], project)
    return project


@pytest.fixture(scope="module")
def distilled(reproduced, tmp_path_factory) -> tuple[Path, str]:
    """The short runs through the distill stage, once for the module (each of base, train, teacher and
    distill is a process that loads torch): the project and `dvc repro distill`'s output. Tests copy it."""
    project = tmp_path_factory.mktemp("distilled") / "project"
    shutil.copytree(reproduced, project)
    commit_short_runs(project, "train", "distill")
    return project, run(["dvc", "repro", "distill"], project).stdout


def test_dvc_repro_split_builds_every_output(reproduced):
    for name in OUTPUTS:
        assert (reproduced / name).stat().st_size > 0, name
    validate = json.loads((reproduced / "metrics/validate.json").read_text())
    records = (reproduced / "data/validated/records.jsonl").read_text().splitlines()
    rejects = (reproduced / "data/validated/rejects.jsonl").read_text().splitlines()
    assert validate["raw"] == len(records) + len(rejects) == validate["kept"] + validate["rejected"]
    assert validate["raw"] >= 300 and validate["documents"] >= 100
    split = json.loads((reproduced / "metrics/split.json").read_text())
    raft = json.loads((reproduced / "metrics/raft.json").read_text())
    assert set(split["leakage"].values()) == set(raft["quality"]["leakage"].values()) == {0}
    assert sum(split["records"].values()) == raft["records"] == validate["kept"]
    status = run(["dvc", "status", "raft"], reproduced)
    assert "up to date" in status.stdout
    assert "Data and pipelines are up to date" in run(["dvc", "repro", "raft"], reproduced).stdout


def test_committed_lock_matches_a_fresh_run(reproduced):
    """dvc.lock in git must be what the current code and data produce, so a clone's first
    `dvc repro` changes nothing tracked: a stale lock or a nondeterministic output fails here."""
    fresh = yaml.safe_load((reproduced / "dvc.lock").read_text())["stages"]
    committed = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    # The data stages are byte-deterministic; train output also depends on the machine's floating point.
    for name in fresh:
        assert fresh[name] == committed[name], f"dvc.lock is stale for {name}: run `dvc repro` and commit"
    for name in ("metrics/validate.json", "metrics/raft.json", "metrics/split.json"):
        assert (reproduced / name).read_bytes() == (ROOT / name).read_bytes(), name


def test_same_params_and_data_give_byte_identical_outputs(reproduced, tmp_path):
    again = make_project(tmp_path / "again")
    run(["dvc", "repro", "raft"], again)
    for name in OUTPUTS:
        assert (again / name).read_bytes() == (reproduced / name).read_bytes(), name


def test_changed_param_reruns_only_downstream_stages(reproduced, tmp_path):
    project = tmp_path / "changed"
    shutil.copytree(reproduced, project)
    set_param(project, "raft.p_golden", 1.0)
    out = run(["dvc", "repro", "raft"], project).stdout
    assert "Stage 'validate' didn't change" in out and "Stage 'split' didn't change" in out
    assert "Running stage 'raft'" in out
    raft = json.loads((project / "metrics/raft.json").read_text())
    assert set(raft["quality"]["golden_included_share"].values()) == {1.0}


def test_bad_param_fails_before_work_with_one_line(tmp_path):
    project = make_project(tmp_path / "bad")
    set_param(project, "raft.p_golden", 1.5)
    stage("validate", project)
    stage("split", project)
    result = stage("raft", project, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "raft: error: params.yaml: raft.p_golden: must be in [0.0, 1.0], got 1.5"
    assert not (project / "data/raft").exists()


@pytest.mark.parametrize("content, expected", [
    (None, "data/raw/extra.json: file not found"),
    ('[{"question": "q", "context": "c", "answer": "a"},\n{"question": ', "data/raw/extra.json:2: invalid JSON"),
])
def test_unreadable_input_file_is_one_clear_line(tmp_path, content, expected):
    project = make_project(tmp_path / "broken")
    if content is not None:
        (project / "data/raw/extra.json").write_text(content, encoding="utf-8")
    edit_params(project, lambda params: params["validate"]["inputs"].append({"path": "data/raw/extra.json"}))
    result = stage("validate", project, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"validate: error: {expected}") and result.stderr.count("\n") == 1
    assert list((project / "data/validated").iterdir()) == []  # no partial rejects.jsonl of the files before


def test_a_validate_run_keeping_nothing_leaves_the_previous_outputs_as_they_were(tmp_path):
    project = make_project(tmp_path / "rerun")
    stage("validate", project)
    outputs = [project / "data/validated/records.jsonl", project / "data/validated/rejects.jsonl",
               project / "metrics/validate.json"]
    before = [path.read_bytes() for path in outputs]
    (project / "data/raw/bad.jsonl").write_text('{"question": "질문"}\n', encoding="utf-8")
    edit_params(project, lambda params: params["validate"].update(inputs=[{"path": "data/raw/bad.jsonl"}]))
    result = stage("validate", project, check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("validate: error: validate kept 0 of 1 raw records {'missing_field': 1}, e.g. "
                                    "data/raw/bad.jsonl:1: 'context' is missing; the previous outputs are left")
    assert [path.read_bytes() for path in outputs] == before
    assert sorted(path.name for path in (project / "data/validated").iterdir()) == ["records.jsonl", "rejects.jsonl"]


def test_a_raft_stage_failing_on_a_later_split_leaves_no_split_written(tmp_path):
    project = make_project(tmp_path / "raft-fails")
    set_param(project, "raft.num_distractors", 100)  # the train split has enough documents, val does not
    stage("validate", project)
    stage("split", project)
    result = stage("raft", project, check=False)
    assert result.returncode == 1 and "split 'val' has" in result.stderr
    assert list((project / "data/raft").iterdir()) == []


@pytest.mark.parametrize("inputs, expected", [
    ([{"path": "/etc/hostname", "format": "jsonl"}],
     "params.yaml: validate.inputs[0].path: /etc/hostname is outside data/raw/, which dvc.yaml tracks"),
    ([{"path": "data/raw/empty.jsonl"}], "data/raw/empty.jsonl:1: empty file, expected one JSON object per line"),
    ([{"path": "data/raw/bad.jsonl"}], "validate kept 0 of 1 raw records {'missing_field': 1}"),
])
def test_inputs_outside_the_tracked_folder_or_keeping_nothing_fail_in_one_line(tmp_path, inputs, expected):
    project = make_project(tmp_path / "inputs")
    (project / "data/raw/empty.jsonl").write_text("", encoding="utf-8")
    (project / "data/raw/bad.jsonl").write_text('{"question": "질문"}\n', encoding="utf-8")
    edit_params(project, lambda params: params["validate"].update(inputs=inputs))
    result = stage("validate", project, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"validate: error: {expected}") and result.stderr.count("\n") == 1
    assert not (project / "metrics/validate.json").exists()


def test_train_stage_and_a_preset_experiment(distilled, tmp_path):
    project = tmp_path / "train"
    shutil.copytree(distilled[0], project)
    assert "Running stage 'train'" in distilled[1]
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["train"]
    adapter = next(out for out in lock["outs"] if out["path"] == "models/train/adapter")
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["model"]["preset"] == "tiny-m" and metrics["steps"] == 3
    assert (project / "metrics/train/plots/metrics/train/loss.tsv").exists()
    assert not (project / "checkpoints/train").exists()
    seed = yaml.safe_load((project / "params.yaml").read_text())["seed"]
    assert f"'seed': {seed}" in (project / "models/train/adapter/README.md").read_text()  # the one seed reached SFT
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


def test_the_golden_only_ablation_runs_as_an_experiment(distilled, tmp_path):
    """raft.num_distractors: 0 with p_golden: 1.0 trains on the golden document alone (docs/evaluation.md)."""
    project = tmp_path / "ablation"
    shutil.copytree(distilled[0], project)
    before = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["train"]
    out = run(["dvc", "exp", "run", "train", "-S", "raft.num_distractors=0", "-S", "raft.p_golden=1.0"], project).stdout
    assert "Running stage 'raft'" in out and "Running stage 'train'" in out
    raft = json.loads((project / "metrics/raft.json").read_text())
    assert raft["golden_included_share"] == 1.0 and raft["distractors"] == 0
    rows = [json.loads(line) for line in (project / "data/raft/train.jsonl").read_text().splitlines()]
    assert all(len(row["documents"]) == 1 and row["oracle_index"] == 0 for row in rows)
    after = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["train"]
    assert after["outs"] != before["outs"]  # another adapter, from other rows
    shown = json.dumps(json.loads(run(["dvc", "exp", "show", "--json"], project).stdout))
    assert '"num_distractors": 0' in shown and '"p_golden": 1.0' in shown


@pytest.mark.parametrize("name, key, value, expected", [
    ("train", "model.preset", "exaone-5", "params.yaml: model.preset: unknown preset 'exaone-5'"),
    ("distill", "distill.loss.divergence", "kl", "params.yaml: distill.loss.divergence: must be one of forward_kl"),
])
def test_model_stage_bad_param_is_one_line(name, key, value, expected, reproduced, tmp_path):
    project = tmp_path / f"bad-{name}"
    shutil.copytree(reproduced, project)
    set_param(project, key, value)
    result = stage(name, project, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{name}: error: {expected}") and result.stderr.count("\n") == 1


def test_a_train_param_clash_is_one_line_with_no_library_warnings_before_it(reproduced, tmp_path):
    """Early stopping loads the best checkpoint, which needs save_steps a multiple of eval_steps: transformers
    says so when the trainer is built, after the model has loaded, unless koraft asks it first."""
    project = tmp_path / "clash"
    shutil.copytree(reproduced, project)
    set_param(project, "train.early_stopping_patience", 3)
    set_param(project, "train.args.save_steps", 3)  # eval_steps: 2
    result = stage("train", project, check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr  # no FutureWarning lines first
    assert result.stderr.startswith("train: error: params.yaml: train.args: --load_best_model_at_end requires the "
                                    "saving steps to be a round multiple of the evaluation steps")


def test_distill_stage_reuses_the_teacher_cache_across_student_experiments(distilled, tmp_path):
    project = tmp_path / "distill"
    shutil.copytree(distilled[0], project)
    out = distilled[1]
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


def test_evaluate_stage_scores_every_variant_then_a_predictions_file(distilled, tmp_path):
    project = tmp_path / "evaluate"
    shutil.copytree(distilled[0], project)
    out = run(["dvc", "repro", "evaluate"], project).stdout
    assert "Stage 'distill' didn't change" in out and "Running stage 'evaluate'" in out
    assert "evaluate: finetuned_vs_base: F1" in out
    metrics = json.loads((project / "metrics/eval.json").read_text())
    assert {"base", "finetuned", "student_base", "distilled", "comparisons"} <= set(metrics)
    assert "Running stage 'export'" in out and {"served", "served_q8_0"} <= set(metrics)  # GGUFs on llama.cpp
    assert metrics["served"]["parity"]["compared_to"] == "finetuned" and metrics["served"]["requests"]["failed"] == 0
    exported = json.loads((project / "metrics/export.json").read_text())
    assert set(exported["gguf"]) == {"f32", "q8_0"} and (project / "models/export/gguf/Modelfile").exists()
    review = (project / "metrics/eval/predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(review) == metrics["scoring"]["samples"] == metrics["scoring"]["test_records"]
    # RAFT's test conditions, from the test split's own documents: the plot data has closed book and k = 3.
    assert {"oracle", "retrieved_k3", "closed_book", "retrieval"} <= set(metrics["conditions"])
    points = json.loads((project / "metrics/eval/conditions.json").read_text())
    assert [point["k"] for point in points] == [0, 3] and points[1]["finetuned_f1"] is not None
    table = run(["dvc", "metrics", "show", "--md"], project).stdout
    assert "finetuned.f1" in table and "comparisons.finetuned_vs_base.f1.low" in table
    assert "Data and pipelines are up to date" in run(["dvc", "repro", "evaluate"], project).stdout

    test = [json.loads(line) for line in (project / "data/raft/test.jsonl").read_text().splitlines()]
    (project / "data/predictions/api.jsonl").write_text("".join(
        json.dumps({"id": row["id"], "prediction": f"<ANSWER>: {row['answer']}"}, ensure_ascii=False) + "\n"
        for row in test), encoding="utf-8")
    set_param(project, "eval.predictions_file", "data/predictions/api.jsonl")
    out = run(["dvc", "repro", "evaluate"], project).stdout
    assert "Stage 'train' didn't change" in out and "Running stage 'evaluate'" in out
    scored = json.loads((project / "metrics/eval.json").read_text())
    assert scored["api"]["exact_match"] == 1.0 and "finetuned" not in scored
