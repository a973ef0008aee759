"""LoRA, QLoRA and full fine-tuning for real (trl + peft + bitsandbytes on CPU) on the tiny presets."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import Crash, model_params, paths, quick
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from koraft.core.errors import KoraftError
from koraft.models.presets import FAMILIES
from koraft.models.samples import SampleTokenizer, build_samples
from koraft.serving.merge import merge_adapter
from koraft.training.config import train_settings
from koraft.training.train import train

pytestmark = [pytest.mark.slow]


def fixed_batch_loss(model, tokenizer, rows: list[dict], system_prompt: str) -> float:
    """Mean completion-token loss on the first rows, as the trainer computes it."""
    samples = build_samples(rows, SampleTokenizer(tokenizer, FAMILIES["tiny"], system_prompt), 384).samples
    losses = []
    with torch.no_grad():
        for sample in samples:
            ids = torch.tensor([sample["input_ids"]])
            labels = torch.where(torch.tensor([sample["completion_mask"]]) == 1, ids, -100)
            losses.append(model(input_ids=ids, labels=labels).loss.item())
    return sum(losses) / len(losses)


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_training_saves_a_loadable_adapter_that_lowers_the_loss(method, params, raft_rows, tiny_models, tmp_path):
    rows = raft_rows["train"][:8]
    where = paths(tmp_path, tiny_models)
    metrics = train(rows, raft_rows["val"][:4], train_settings(model_params(params),
                    quick(params, method, steps=12, learning_rate=1.0e-2)), where)
    assert (where.adapter / "adapter_model.safetensors").exists() and not where.checkpoints.exists()
    assert metrics["steps"] == 12 and metrics["model"]["method"] == method
    assert 0 < metrics["parameters"]["trainable_share"] < 0.5 and metrics["cost"]["adapter_bytes"] > 0
    assert metrics["loss"]["eval_best"] is not None and metrics["cost"]["tokens_per_s"] > 0
    packing = metrics["packing"]  # on by default: tiny-s runs sdpa, which packs exactly
    assert packing["enabled"] and packing["attention"] == "sdpa" and packing["fallback_reason"] is None
    assert packing["samples"] == len(rows) and 0 < packing["bins"] <= len(rows) and 0 < packing["bin_fill"] <= 1

    tokenizer = AutoTokenizer.from_pretrained(where.adapter)
    base = AutoModelForCausalLM.from_pretrained(tiny_models / "tiny-s")
    before = fixed_batch_loss(base, tokenizer, rows[:4], params["model"]["system_prompt"])
    tuned = PeftModel.from_pretrained(base, where.adapter)
    after = fixed_batch_loss(tuned, tokenizer, rows[:4], params["model"]["system_prompt"])
    assert after < before - 0.1, (before, after)

    modules = json.loads((where.adapter / "adapter_config.json").read_text())["target_modules"]
    assert modules == sorted(modules) and "lm_head" not in modules  # byte-stable across processes

    manifest = json.loads((where.adapter / "koraft_manifest.json").read_text())
    assert [entry["id"] for entry in manifest["samples"]["train"]] == [row["id"] for row in rows]
    assert manifest["prompts_sha256"] == metrics["prompts_sha256"] and manifest["method"] == method
    curve = (where.plots / "plots/metrics/train/loss.tsv").read_text().splitlines()
    assert curve[0] == "step\tloss" and [line.split("\t")[0] for line in curve[1:]] == [str(s) for s in range(1, 13)]


def test_qlora_loads_the_base_in_4_bit_nf4(params, raft_rows, tiny_models, tmp_path):
    class Inspect(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            import bitsandbytes as bnb

            layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
            self.quant_types = {layer.weight.quant_type for layer in layers}
            self.double = {layer.weight.quant_state.nested for layer in layers}

    inspect = Inspect()
    train(raft_rows["train"][:4], [], train_settings(model_params(params), quick(params, "qlora", steps=1)),
          paths(tmp_path, tiny_models), callbacks=[inspect])
    assert inspect.quant_types == {"nf4"} and inspect.double == {True}


def test_interrupted_run_resumes_to_the_same_adapter(params, raft_rows, tiny_models, tmp_path):
    rows, val = raft_rows["train"][:12], raft_rows["val"][:4]
    settings = quick(params, "lora", steps=8)
    clean = paths(tmp_path / "clean", tiny_models)
    uninterrupted = train(rows, val, train_settings(model_params(params), settings), clean)

    interrupted = paths(tmp_path / "interrupted", tiny_models)
    with pytest.raises(KeyboardInterrupt):
        train(rows, val, train_settings(model_params(params), settings), interrupted, callbacks=[Crash(at_step=4)])
    assert (interrupted.checkpoints / "checkpoint-4" / "trainer_state.json").exists()
    metrics = train(rows, val, train_settings(model_params(params), settings), interrupted)
    assert metrics.pop("cost")["resumed_from_step"] == 4 and uninterrupted.pop("cost")["resumed_from_step"] is None
    assert metrics == uninterrupted  # every compared figure, the mean train loss included

    expected = load_file(clean.adapter / "adapter_model.safetensors")
    resumed = load_file(interrupted.adapter / "adapter_model.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=1e-5, atol=1e-6)
    for name in ("train/loss.tsv", "eval/loss.tsv"):
        assert (interrupted.plots / "plots/metrics" / name).read_text() == \
               (clean.plots / "plots/metrics" / name).read_text()


def test_checkpoints_of_other_params_are_not_resumed(params, raft_rows, tiny_models, tmp_path):
    rows = raft_rows["train"][:8]
    where = paths(tmp_path, tiny_models)
    with pytest.raises(KeyboardInterrupt):
        train(rows, [], train_settings(model_params(params), quick(params, steps=6)), where,
              callbacks=[Crash(at_step=2)])
    metrics = train(rows, [], train_settings(model_params(params), quick(params, steps=6, learning_rate=5.0e-4)), where)
    assert metrics["cost"]["resumed_from_step"] is None


def test_merge_reloads_the_base_unquantized_and_equals_base_plus_adapter(params, raft_rows, tiny_models, tmp_path):
    where = paths(tmp_path, tiny_models)
    train(raft_rows["train"][:8], [],
          train_settings(model_params(params), quick(params, "qlora", steps=4, learning_rate=1.0e-2)), where)
    merged_dir = merge_adapter(where.adapter, tmp_path / "merged", dtype="float32")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert "quantization_config" not in json.loads((merged_dir / "config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(tiny_models / "tiny-s")
    with_adapter = PeftModel.from_pretrained(base, where.adapter)
    ids = torch.tensor([AutoTokenizer.from_pretrained(merged_dir)("한결시의 인구는 약 12만 명이다.")["input_ids"]])
    with torch.no_grad():
        expected, actual = with_adapter(input_ids=ids).logits, merged(input_ids=ids).logits
        with with_adapter.disable_adapter():
            plain = with_adapter(input_ids=ids).logits
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(plain, actual, atol=1e-3)  # the adapter did change the model
    bf16 = merge_adapter(where.adapter, tmp_path / "merged-bf16")
    assert json.loads((bf16 / "config.json").read_text())["dtype"] == "bfloat16"


def test_full_fine_tuning_saves_a_whole_model(params, raft_rows, tiny_models, tmp_path):
    where = paths(tmp_path, tiny_models)
    metrics = train(raft_rows["train"][:4], [], train_settings(model_params(params), quick(params, "full", steps=2)),
                    where)
    assert metrics["parameters"]["trainable_share"] == 1.0
    assert (where.adapter / "model.safetensors").exists()
    with pytest.raises(KoraftError, match="already is a standalone model"):
        merge_adapter(where.adapter, tmp_path / "merged")


@pytest.mark.parametrize("change, expected", [
    (lambda m, t: m.update(preset="gpt-5"), "model.preset: unknown preset 'gpt-5'"),
    (lambda m, t: t["lora"].update(target_modules=["q_proj", "out_proj"]),
     r"train.lora.target_modules: \['out_proj'\] name no layer"),
    (lambda m, t: t["args"].update(max_length=12), "train.args.max_length: 12 tokens hold no sample"),
    (lambda m, t: t["args"].update(learning_rat=1.0e-3), r"train.args: unknown keys \['learning_rat'\]"),
    (lambda m, t: t["args"].update(output_dir="/tmp/x"), r"train.args: \['output_dir'\] are set by koraft"),
    (lambda m, t: t.update(method="dora"), "train.method: must be one of qlora, lora, full"),
    (lambda m, t: t["lora"].update(rank=8), r"train.lora: unknown keys \['rank'\]"),
    (lambda m, t: m.update(system_prompt=["a"]), "model.system_prompt: must be a string"),
    (lambda m, t: t["args"].update(lr_scheduler_type="cosine-ish"), "train.args: .*cosine-ish"),
])
def test_bad_params_fail_in_one_line_before_training(change, expected, params, raft_rows, tiny_models, tmp_path):
    model, settings = model_params(params), quick(params)
    change(model, settings)
    where = paths(tmp_path, tiny_models)
    with pytest.raises(KoraftError, match=expected) as error:
        train(raft_rows["train"][:4], [], train_settings(model, settings), where)
    assert "\n" not in str(error.value) and not where.checkpoints.exists()


@pytest.mark.parametrize("change, expected", [
    (lambda m, t: m.update(trust_remote_code="false"), "model.trust_remote_code: must be true or false"),
    (lambda m, t: t["args"].update(learning_rate="2e-4"), r"train.args.learning_rate: must be a number, got '2e-4' "
                                                          r"\(write floats like 2.0e-4"),
    (lambda m, t: t["args"].update(learning_rate="abc"), "train.args.learning_rate: must be a number, got 'abc'"),
    (lambda m, t: t["args"].update(per_device_train_batch_size=0), r"per_device_train_batch_size: must be in \[1, "),
    (lambda m, t: t["args"].update(num_train_epochs="many"), "train.args.num_train_epochs: must be a number"),
    (lambda m, t: t["args"].update(save_steps=0), r"train.args.save_steps: must be in \["),
    (lambda m, t: t["lora"].update(r=0), r"train.lora.r: must be in \[1, "),
    (lambda m, t: t["lora"].update(r="16"), "train.lora.r: must be an integer, got '16'"),
    (lambda m, t: t["lora"].update(lora_dropout=1.5), r"train.lora.lora_dropout: must be in \[0, 0.999\]"),
    (lambda m, t: t.update(method="qlora", quantization={"bnb_4bit_quant_type": "fp5"}),
     "train.quantization.bnb_4bit_quant_type: must be one of nf4, fp4, got 'fp5'"),
    (lambda m, t: t.update(packing="yes"), "train.packing: must be true or false, got 'yes'"),
    (lambda m, t: t["args"].update(padding_free=True), r"train.args: \['padding_free'\] are set by koraft"),
    (lambda m, t: t["args"].update(use_liger_kernel=True), "train.args.use_liger_kernel: needs the liger-kernel "
                                                           "package and a CUDA GPU"),
    (lambda m, t: m.update(attn_implementation="flash"), "model.attn_implementation: must be one of auto, sdpa"),
])
def test_new_user_mistakes_fail_in_one_line_before_any_model_loads(change, expected, params, raft_rows, tiny_models,
                                                                    tmp_path, monkeypatch):
    """Each of these once ended in a traceback after the model had loaded, naming no key."""
    def no_loading(*args, **kwargs):
        raise AssertionError("a tokenizer or model was loaded before the params were checked")

    monkeypatch.setattr("koraft.training.train.load_tokenizer", no_loading)
    monkeypatch.setattr("koraft.training.train.load_model", no_loading)
    model, settings = model_params(params), quick(params)
    change(model, settings)
    with pytest.raises(KoraftError, match=expected) as error:
        train(raft_rows["train"][:4], raft_rows["val"][:2], train_settings(model, settings),
              paths(tmp_path, tiny_models))
    assert "\n" not in str(error.value)


def test_empty_training_split_is_a_clear_error(params, tiny_models, tmp_path):
    with pytest.raises(KoraftError, match="train.jsonl: training split is empty"):
        train([], [], train_settings(model_params(params), quick(params)), paths(tmp_path, tiny_models),
              "data/raft/train.jsonl")


def test_family_without_chat_template_is_refused(params, raft_rows, tiny_models, tmp_path):
    folder = tmp_path / "no-template"
    tokenizer = AutoTokenizer.from_pretrained(tiny_models / "tiny-s")
    AutoModelForCausalLM.from_pretrained(tiny_models / "tiny-s").save_pretrained(folder)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(KoraftError, match="has no chat template"):
        train(raft_rows["train"][:4], [], train_settings({"name": str(folder), "family": "tiny"}, quick(params)),
              paths(tmp_path, tiny_models))
