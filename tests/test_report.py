"""Reports, model cards and the Hub upload's staging, on the project's committed metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import ROOT
from PIL import Image

from koraft.core.errors import KoraftError
from koraft.models.card import render_card, write_card
from koraft.publish.hub import push, stage_folder
from koraft.publish.report import load_run, write_report
from koraft.training.config import TrainSettings, train_settings
from koraft.training.train import train


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A checkout's metrics/ and params.yaml, as `dvc repro` left them, as the working directory."""
    shutil.copytree(ROOT / "metrics", tmp_path / "metrics")
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, params, raft_rows, tiny_models) -> Path:
    """A folder as the train stage writes it (one step of full fine-tuning of tiny-s): what a card describes."""
    from helpers import model_params, paths, quick

    root = tmp_path_factory.mktemp("trained")
    train(raft_rows["train"][:4], [], train_settings(model_params(params), quick(params, "full", steps=1)),
          paths(root, tiny_models))
    return root / "adapter"


def card_settings(**sections) -> TrainSettings:
    """The training settings a card writes down: LoRA, quantization and trainer arguments."""
    return TrainSettings(**{"model": {}, "system_prompt": "", "method": "lora", "args": {}, "lora": {},
                            "quantization": {}, **sections})


def test_report_has_tables_intervals_examples_and_valid_pngs(workspace):
    run = load_run("workspace", None)
    path = write_report("weekly", [run], top=3)
    text = path.read_text(encoding="utf-8")
    evaluation = json.loads((workspace / "metrics/eval.json").read_text())
    assert path.resolve() == workspace / "reports/weekly.md"
    assert f"| finetuned | {evaluation['finetuned']['f1']:g} |" in text
    interval = evaluation["comparisons"]["finetuned_vs_base"]["f1"]
    assert f"| finetuned vs base | F1 | {interval['delta']:+g} | [{interval['low']:+g}, {interval['high']:+g}]" in text
    assert "**Best 3 answers of `finetuned`**" in text and "**Worst 3 answers of `finetuned`**" in text
    served = evaluation["served"]["parity"]
    assert f"| served | finetuned | {served['answers']:.1%} | {served['outputs']:.1%} | 0 |" in text
    # every warning of the run, said: on the committed run, the held-out perplexity rise
    assert evaluation["warnings"] and all(f"> warning: {warning}" in text for warning in evaluation["warnings"])
    # RAFT's test conditions: the same questions with oracle, retrieved and no documents, and the paired change.
    conditions = evaluation["conditions"]
    assert f"The same {conditions['questions']} test questions" in text
    retrieved = conditions["retrieved_k3"]
    change = retrieved["comparisons"]["finetuned_vs_base"]["f1"]
    row = next(line for line in text.splitlines() if line.startswith("| retrieved k=3 | "))
    assert f"| {conditions['retrieval']['k3']['recall']} | {conditions['retrieval']['k3']['mrr']} |" in row
    assert f"{retrieved['finetuned']['exact_match']:g} / {retrieved['finetuned']['f1']:g}" in row
    assert f"{change['delta']:+g} [{change['low']:+g}, {change['high']:+g}]" in row
    assert any(line.startswith("| closed book | – | – | ") for line in text.splitlines())
    assert "- retrieved k=3, finetuned: F1 " in text
    images = sorted((workspace / "reports/weekly").glob("*.png"))
    assert [image.name for image in images] == ["by_k_workspace.png", "loss_workspace.png", "metrics_workspace.png"]
    for image in images:
        assert f"(weekly/{image.name})" in text
        with Image.open(image) as png:
            png.verify()
            assert png.format == "PNG" and png.size[0] > 300


def test_report_without_an_evaluation_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KoraftError, match="the workspace has no metrics/eval.json; run `dvc repro`"):
        load_run("workspace", None)


def test_model_card_names_base_license_data_and_training(trained, tmp_path):
    folder = tmp_path / "adapter"
    shutil.copytree(trained, folder)
    data = tmp_path / "train.jsonl"
    data.write_text('{"id": "a"}\n', encoding="utf-8")
    training = {"steps": 30, "epochs": 1.0, "loss": {"train_final": 2.5, "eval_final": 3.1, "eval_best": 3.0},
                "samples": {"train": {"samples": 16, "records": 16, "samples_trimmed": 0, "samples_skipped": 0}},
                "cost": {"train_runtime_s": 12.3}}
    write_card(folder, training, card_settings(args={"learning_rate": 3.0e-3}), data)
    card = (folder / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "other" and front["license_name"] == "koraft-tiny" and front["language"] == ["ko"]
    assert front["library_name"] == "transformers" and "full" in front["tags"]  # the fixture is fully trained
    assert "12.3" not in card  # no runtimes: equal runs give equal cards
    import hashlib

    assert hashlib.sha256(data.read_bytes()).hexdigest() in card
    assert "final eval loss 3.1" in card and "'learning_rate': 0.003" in card


def test_real_families_get_their_license_and_base_model(trained, tmp_path):
    folder = tmp_path / "adapter"
    shutil.copytree(trained, folder)
    manifest = json.loads((folder / "koraft_manifest.json").read_text())
    manifest["model"].update(family="gemma2", source="google/gemma-2-2b-it", preset="gemma-2-2b-it", revision="abc")
    manifest["method"] = "qlora"
    (folder / "koraft_manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    card = render_card(folder, {}, card_settings(lora={"r": 16}, quantization={"bnb_4bit_quant_type": "nf4"}), "0" * 64)
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "gemma" and front["base_model"] == "google/gemma-2-2b-it"
    assert front["library_name"] == "peft" and "`google/gemma-2-2b-it` at revision `abc`" in card
    assert "Gemma Terms of Use" in card and "quantization: {'bnb_4bit_quant_type': 'nf4'}" in card


def test_hub_staging_adds_evaluation_and_never_writes_the_token(trained, workspace, monkeypatch):
    folder = workspace / "adapter"
    shutil.copytree(trained, folder)
    (workspace / "data/raft").mkdir(parents=True)
    (workspace / "data/raft/train.jsonl").write_text('{"id": "a"}\n', encoding="utf-8")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    staged = stage_folder(folder, workspace / "staged")
    names = {path.name for path in staged.iterdir()}
    assert "training_args.bin" not in names and {"README.md", "koraft_manifest.json"} <= names
    card = (staged / "README.md").read_text(encoding="utf-8")
    f1 = json.loads((workspace / "metrics/eval.json").read_text())["finetuned"]["f1"]
    assert "## Evaluation" in card and f"| F1 (KorQuAD) | {f1} |" in card and "finetuned F1 vs its base" in card
    assert not any("hf_secret_value_123" in path.read_bytes().decode("utf-8", "ignore") for path in staged.iterdir())


def test_hub_upload_needs_the_token_from_the_environment(trained, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(KoraftError, match="set HF_TOKEN in the environment"):
        push(trained, "someone/model", private=True)


def test_perplexity_table_marks_a_rise_beyond_noise_only():
    from koraft.publish.report import perplexity_table

    change = {"loss": {"delta": 0.29, "low": 0.21, "high": 0.37, "share_better": 1.0}, "perplexity_ratio": 1.34,
              "rose": True}
    calm = {"loss": {"delta": 0.01, "low": -0.05, "high": 0.06, "share_better": 0.6}, "perplexity_ratio": 1.01,
            "rose": False}
    evaluation = {"perplexity": {
        "general": {"texts": 120, "base": {"loss": 4.12, "perplexity": 61.9, "tokens": 1891},
                    "finetuned": {"loss": 4.41, "perplexity": 82.6, "tokens": 1891}, "finetuned_vs_base": change},
        "test_documents": {"texts": 89, "base": {"loss": 3.2, "perplexity": 24.5, "tokens": 6339},
                           "finetuned": {"loss": 3.21, "perplexity": 24.8, "tokens": 6339},
                           "finetuned_vs_base": calm},
        "max_tokens": 256}}
    lines = perplexity_table(evaluation)
    assert len(lines) == 2 + 4
    assert lines[3] == "| general | 120 | finetuned | 82.6 | +0.29 [+0.21, +0.37] **rose beyond noise** |"
    assert lines[2].endswith("| base | 61.9 | – |")
    assert lines[5].endswith("+0.01 [-0.05, +0.06] within noise (covers 0) |")
    assert perplexity_table({}) == []
