"""The benchmark stage: lm-evaluation-harness on the variants, with a local YAML task written here, the
shipped Korean paraphrase task, and hub tasks that an offline machine cannot fetch."""

from __future__ import annotations

import copy
import json

import pytest
from helpers import ROOT, run, stage

from koraft.benchmark.config import load_benchmark
from koraft.benchmark.harness import compare, primary_metric
from koraft.core.errors import ParamError

TASK = """task: koraft_test_capital
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{question}}}} 답:"
doc_to_target: "{{{{label}}}}"
doc_to_choice: ["서울", "부산", "대구"]
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
QUESTIONS = [("한국의 수도는?", 0), ("해운대가 있는 도시는?", 1), ("동성로가 있는 도시는?", 2),
             ("광화문이 있는 도시는?", 0), ("자갈치 시장이 있는 도시는?", 1), ("팔공산이 있는 도시는?", 2)]


def benchmark_params(params: dict, **changes) -> dict:
    result = copy.deepcopy(params)
    result["model"]["preset"] = "tiny-m"
    result["benchmark"].update({"enabled": True, **changes})
    return result


@pytest.fixture(scope="module")
def task_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    data = folder / "capital.jsonl"
    data.write_text("".join(json.dumps({"question": q, "label": label}, ensure_ascii=False) + "\n"
                            for q, label in QUESTIONS), encoding="utf-8")
    (folder / "capital.yaml").write_text(TASK.format(data=data), encoding="utf-8")
    return folder


@pytest.mark.slow
def test_the_harness_scores_two_variants_on_a_local_task_and_names_what_it_could_not_fetch(
        params, teacher_adapter, tiny_models, task_folder, monkeypatch):
    from koraft.benchmark.harness import run_benchmark

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine with no network: the hub tasks cannot load
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(ROOT)  # the shipped task's data path is relative to the repository root, as dvc runs it
    settings = load_benchmark(benchmark_params(
        params, tasks=["koraft_test_capital", "koraft_ko_paraphrase", "kobest_boolq", "no_such_task"],
        variants=["base", "finetuned"], limit=8, batch_size=4))
    report = run_benchmark(settings, tiny_models, {"finetuned": (teacher_adapter, "train")}, [task_folder])
    assert set(report["tasks"]) == {"koraft_test_capital", "koraft_ko_paraphrase"}
    capital = report["tasks"]["koraft_test_capital"]
    for name in ("base", "finetuned"):
        assert capital[name]["metric"] == "acc" and capital[name]["samples"] == len(QUESTIONS)
        assert capital[name]["value"] in {round(k / len(QUESTIONS), 4) for k in range(len(QUESTIONS) + 1)}
        assert capital[name]["stderr"] > 0
    change = capital["finetuned_vs_base"]
    assert change["delta"] == pytest.approx(capital["finetuned"]["value"] - capital["base"]["value"], abs=1e-4)
    assert change["dropped"] == (change["delta"] < -1.96 * change["stderr"])
    assert report["tasks"]["koraft_ko_paraphrase"]["base"]["samples"] == 8  # limit: 8 of its 80 examples
    # One line each, and the other tasks still ran.
    missing = report["unavailable"]["kobest_boolq"]
    assert "skt/kobest_v1" in missing and "\n" not in missing
    assert report["unavailable"]["no_such_task"] == "no such task in lm-evaluation-harness or the task folders"


def test_a_drop_beyond_its_error_bars_is_flagged_and_one_within_them_is_not():
    scores = {"a": {"base": {"metric": "acc", "value": 0.8, "stderr": 0.02},
                    "finetuned": {"metric": "acc", "value": 0.7, "stderr": 0.02}},
              "b": {"base": {"metric": "acc", "value": 0.8, "stderr": 0.05},
                    "finetuned": {"metric": "acc", "value": 0.75, "stderr": 0.05}},
              "c": {"base": {"metric": "acc", "value": 0.5, "stderr": None},
                    "finetuned": {"metric": "acc", "value": 0.1, "stderr": None}}}
    scored, warnings = compare(scores, 1.96)
    assert scored["a"]["finetuned_vs_base"] == {"delta": -0.1, "stderr": round(0.02 * 2 ** 0.5, 4), "dropped": True}
    assert not scored["b"]["finetuned_vs_base"]["dropped"]
    assert not scored["c"]["finetuned_vs_base"]["dropped"]  # no error bars: no claim either way
    assert len(warnings) == 1 and warnings[0].startswith("a: finetuned acc 0.7 against base 0.8")


def test_primary_metric_prefers_accuracy_and_reads_the_harness_stderr():
    assert primary_metric({"acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.6}) == ("acc", 0.5, 0.1)
    assert primary_metric({"exact_match,none": 0.25, "exact_match_stderr,none": "N/A"}) == ("exact_match", 0.25, None)
    assert primary_metric({"alias": "x"}) is None


@pytest.mark.parametrize("change, message", [
    ({"tasks": []}, "benchmark.tasks: a list of distinct lm-evaluation-harness task names"),
    ({"variants": ["served"]}, r"benchmark.variants: a list of distinct model variants"),
    ({"limit": 0}, r"benchmark.limit: must be in"),
    ({"num_shots": 5}, r"benchmark: unknown keys \['num_shots'\]"),
])
def test_bad_benchmark_params_are_one_line(params, change, message):
    with pytest.raises(ParamError, match=message):
        load_benchmark(benchmark_params(params, **change))


def test_the_stage_is_off_by_default_and_records_that(params, tmp_path):
    from helpers import make_project

    assert load_benchmark(params) is None  # the shipped params: off
    project = make_project(tmp_path / "project")
    result = stage("benchmark", project)
    assert json.loads((project / "metrics" / "benchmark.json").read_text()) == {"enabled": False}
    assert "benchmark: off" in result.stdout
    assert run(["git", "status", "--short"], project).returncode == 0
