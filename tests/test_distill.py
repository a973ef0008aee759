"""Distillation for real on the tiny presets: trl's trainer, a trained teacher adapter, the top-k cache."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from datasets import Dataset
from family_models import build_family_model, family_tokenizer
from helpers import Crash, distill_params, paths, quick, where
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTTrainer

from koraft.core.errors import KoraftError, ParamError
from koraft.models.presets import FAMILIES
from koraft.models.samples import SampleTokenizer, build_samples
from koraft.training.config import distill_settings, train_settings
from koraft.training.distill import DistillPaths, build_teacher_cache, distill, with_cache_rows
from koraft.training.distill_loss import KDSettings
from koraft.training.distill_trainer import KDTrainer
from koraft.training.teacher_cache import TopK, check_same_vocabulary, load_top_k, save_top_k, teacher_top_k
from koraft.training.train import sft_config, train

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def tiny_samples(params, raft_rows, tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models / "tiny-s")
    encoder = SampleTokenizer(tokenizer, FAMILIES["tiny"], params["model"]["system_prompt"])
    return tokenizer, build_samples(raft_rows["train"][:8], encoder, 384).samples


def trainer(cls, model, tokenizer, samples, tmp_path, **kwargs):
    args = {"max_length": 384, "per_device_train_batch_size": 4, "seed": 0, "report_to": "none"}
    config = sft_config({k: v for k, v in args.items() if k != "report_to"}, tmp_path / cls.__name__,
                        has_eval=False, early_stopping=False)
    return cls(model=model, args=config, train_dataset=Dataset.from_list(samples), processing_class=tokenizer,
               **kwargs)


def first_batch(kd_trainer) -> dict:
    return next(iter(kd_trainer.get_train_dataloader()))


def loss_on(a_trainer, batch: dict) -> float:
    with torch.no_grad():
        return a_trainer.compute_loss(a_trainer.model, dict(batch)).item()


def test_alpha_one_is_exactly_the_sft_loss(tiny_samples, tiny_models, tmp_path):
    tokenizer, samples = tiny_samples
    student = AutoModelForCausalLM.from_pretrained(tiny_models / "tiny-s")
    teacher = AutoModelForCausalLM.from_pretrained(tiny_models / "tiny-m")
    kd = trainer(KDTrainer, student, tokenizer, samples, tmp_path, teacher=teacher, vocabulary=len(tokenizer),
                 kd=KDSettings(alpha=1.0, divergence="forward_kl", temperature=2.0))
    sft = trainer(SFTTrainer, student, tokenizer, samples, tmp_path)
    batch = first_batch(kd)
    assert (batch["labels"] != -100).sum() > 20
    assert loss_on(kd, batch) == pytest.approx(loss_on(sft, batch), abs=1e-5)
    half = trainer(KDTrainer, student, tokenizer, samples, tmp_path, teacher=teacher, vocabulary=len(tokenizer),
                   kd=KDSettings(alpha=0.5, divergence="forward_kl", temperature=2.0))
    assert abs(loss_on(half, batch) - loss_on(sft, batch)) > 0.1  # the divergence term is really there


def test_a_truncated_or_foreign_teacher_cache_is_one_line_naming_the_file(tmp_path):
    top = TopK(token_ids=torch.zeros(40, 8, dtype=torch.int32), log_probs=torch.zeros(40, 8),
               tail=torch.zeros(40), offsets=torch.tensor([0, 25, 40]))
    save_top_k(tmp_path / "train.safetensors", top)
    whole = (tmp_path / "train.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(whole[:len(whole) // 2])  # the copy that did not finish
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))  # some other model's file
    for name in ("cut", "foreign"):
        path = tmp_path / f"{name}.safetensors"
        with pytest.raises(KoraftError) as raised:
            load_top_k(path)
        assert str(raised.value).startswith(f"{path}: a damaged teacher cache (") and "\n" not in str(raised.value)
        assert str(raised.value).endswith("rebuild it: dvc repro -f teacher")


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_offline_cache_round_trips_and_matches_online_when_k_covers_the_vocabulary(kind, tiny_samples,
                                                                                   tiny_models, tmp_path):
    tokenizer, samples = tiny_samples
    student = AutoModelForCausalLM.from_pretrained(tiny_models / "tiny-s")
    teacher = AutoModelForCausalLM.from_pretrained(tiny_models / "tiny-m")
    settings = KDSettings(alpha=0.3, divergence=kind, temperature=2.0, beta=0.3)
    vocabulary = len(tokenizer)

    full = teacher_top_k(teacher, samples, vocabulary, settings.temperature, vocabulary, batch_size=3)
    save_top_k(tmp_path / "train.safetensors", full)
    loaded = load_top_k(tmp_path / "train.safetensors")
    for name, tensor in full.tensors().items():
        assert torch.equal(tensor, getattr(loaded, name)), name
    completion_tokens = sum(sum(sample["completion_mask"]) for sample in samples)
    assert loaded.token_ids.shape == (completion_tokens, vocabulary) and int(loaded.offsets[-1]) == completion_tokens

    online = trainer(KDTrainer, student, tokenizer, samples, tmp_path, teacher=teacher, vocabulary=vocabulary,
                     kd=settings)
    offline = trainer(KDTrainer, student, tokenizer, with_cache_rows(samples, loaded, 0), tmp_path,
                      top_k=loaded, covers_vocabulary=True, vocabulary=vocabulary, kd=settings)
    batch = first_batch(offline)
    plain = {key: value for key, value in batch.items() if key not in KDTrainer.TEACHER_COLUMNS}
    assert loss_on(offline, batch) == pytest.approx(loss_on(online, plain), rel=1e-5)

    top5 = teacher_top_k(teacher, samples, 5, settings.temperature, vocabulary, batch_size=8)
    assert torch.equal(top5.token_ids, full.token_ids[:, :5]) and torch.equal(top5.offsets, full.offsets)
    coarse = trainer(KDTrainer, student, tokenizer, with_cache_rows(samples, top5, 0), tmp_path, top_k=top5,
                     vocabulary=vocabulary, kd=settings)
    if kind == "forward_kl":  # the k + 1 outcome divergence is a lower bound of the full one
        assert loss_on(coarse, batch) < loss_on(online, plain)
    assert torch.isfinite(torch.tensor(loss_on(coarse, batch)))


def test_distilled_student_agrees_with_its_teacher_more_than_before(params, raft_rows, teacher_adapter,
                                                                    tiny_models, tmp_path):
    settings = distill_params(params, steps=32, alpha=0.0, temperature=1.0)
    settings["args"]["learning_rate"] = 1.0e-2
    settings["teacher"]["top_k"] = 20
    rows, val = raft_rows["train"][:16], raft_rows["val"][:8]
    where_ = where(tmp_path, teacher_adapter, tiny_models)
    cache = build_teacher_cache(rows, val, distill_settings(settings), teacher_adapter, where_.cache)
    assert cache["splits"]["train"]["samples"] == 16 and 0.2 < cache["splits"]["train"]["mass_in_top_k"]["mean"] < 1

    metrics = distill(rows, val, distill_settings(settings), where_)
    assert metrics["agreement"]["after"] > metrics["agreement"]["before"] + 0.2, metrics["agreement"]
    assert metrics["agreement"]["tokens"] == cache["splits"]["val"]["tokens"]
    assert metrics["steps"] == 32 and metrics["student"]["preset"] == "tiny-s"
    assert metrics["loss"]["kd_final"] > 0 and metrics["loss"]["eval_kd_final"] > 0
    assert metrics["loss"]["ce_final"] > 0 and metrics["loss"]["eval_final"] is not None
    assert metrics["teacher"]["mode"] == "offline" and metrics["teacher"]["top_k"] == 20
    assert metrics["teacher"]["final_logit_softcapping"] is None and "note" not in metrics["teacher"]
    assert metrics["cost"]["student_bytes"] > 0 and metrics["parameters"]["total"] > 0
    manifest = json.loads((where_.student.adapter / "koraft_manifest.json").read_text())
    assert manifest["distilled_from"]["teacher"] == "tiny-m" and manifest["model"]["preset"] == "tiny-s"
    kd_curve = (where_.student.plots / "plots/metrics/train/kd_loss.tsv").read_text().splitlines()
    assert kd_curve[0] == "step\tkd_loss" and len(kd_curve) == 33
    assert not where_.student.checkpoints.exists()


def test_online_and_full_vocabulary_offline_train_the_same_student(params, raft_rows, teacher_adapter,
                                                                   tiny_models, tmp_path):
    rows, val = raft_rows["train"][:8], raft_rows["val"][:2]
    histories = {}
    for mode in ("online", "offline"):
        settings = distill_params(params, steps=3, mode=mode, divergence="jsd", temperature=2.0)
        settings["teacher"]["top_k"] = 100_000  # more than the vocabulary: every token is kept
        root = tmp_path / mode
        build_teacher_cache(rows, val, distill_settings(settings), teacher_adapter, root / "cache")
        metrics = distill(rows, val, distill_settings(settings), where(root, teacher_adapter, tiny_models))
        assert metrics["teacher"]["mode"] == mode
        histories[mode] = [metrics["loss"]["train_final"], metrics["loss"]["eval_final"],
                           metrics["agreement"]["before"], metrics["agreement"]["after"]]
    assert histories["online"] == pytest.approx(histories["offline"], rel=1e-4)
    assert json.loads((tmp_path / "online/cache/manifest.json").read_text()) == {"mode": "online"}


@pytest.mark.parametrize("method, output", [("qlora", "adapter_model.safetensors"), ("full", "model.safetensors")])
def test_student_trains_with_qlora_or_fully(method, output, params, raft_rows, teacher_adapter, tiny_models,
                                            tmp_path):
    settings = distill_params(params, steps=2, mode="online")
    settings["method"] = method
    where_ = where(tmp_path, teacher_adapter, tiny_models)
    metrics = distill(raft_rows["train"][:4], raft_rows["val"][:2], distill_settings(settings), where_)
    assert metrics["student"]["method"] == method and (where_.student.adapter / output).exists()
    share = metrics["parameters"]["trainable_share"]
    assert share == 1.0 if method == "full" else 0 < share < 0.5
    if method == "qlora":
        config = json.loads((where_.student.adapter / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"].endswith("tiny-s")


def test_interrupted_offline_distillation_resumes_to_the_same_student(params, raft_rows, teacher_adapter,
                                                                      tiny_models, tmp_path):
    """Resuming skips the batches already seen; their cache rows must still line up with the samples."""
    rows, val = raft_rows["train"][:12], raft_rows["val"][:4]
    settings = distill_params(params, steps=8)
    build_teacher_cache(rows, val, distill_settings(settings), teacher_adapter, tmp_path / "cache")
    runs = {name: DistillPaths(teacher_adapter, tmp_path / "cache", where(tmp_path / name, teacher_adapter,
                                                                         tiny_models).student)
            for name in ("clean", "interrupted")}  # two students, one shared teacher cache
    uninterrupted = distill(rows, val, distill_settings(settings), runs["clean"])
    with pytest.raises(KeyboardInterrupt):
        distill(rows, val, distill_settings(settings), runs["interrupted"], callbacks=[Crash(at_step=4)])
    metrics = distill(rows, val, distill_settings(settings), runs["interrupted"])
    assert metrics.pop("cost")["resumed_from_step"] == 4
    uninterrupted.pop("cost")
    assert metrics == uninterrupted  # every compared figure, losses and agreement included
    expected, resumed = (load_file(runs[name].student.adapter / "adapter_model.safetensors") for name in runs)
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=1e-5, atol=1e-6)
    curves = [(runs[name].student.plots / "plots/metrics/train/kd_loss.tsv").read_text() for name in runs]
    assert curves[0] == curves[1]


def test_a_cache_built_for_other_samples_is_refused(params, raft_rows, teacher_adapter, tiny_models, tmp_path):
    rows, val = raft_rows["train"][:4], raft_rows["val"][:2]
    settings = distill_params(params, steps=1)
    where_ = where(tmp_path, teacher_adapter, tiny_models)
    build_teacher_cache(rows, val, distill_settings(settings), teacher_adapter, where_.cache)
    shorter = copy.deepcopy(settings)
    shorter["args"]["max_length"] = 200
    built = settings["args"]["max_length"]
    with pytest.raises(KoraftError, match=rf"cache was built with max_length {built} \(params: 200\); run `dvc repro"):
        distill(rows, val, distill_settings(shorter), where_)
    with pytest.raises(KoraftError, match="cached train samples are not the student's"):
        distill(raft_rows["train"][4:8], val, distill_settings(settings), where_)


def test_mismatched_vocabularies_are_refused_naming_the_first_differing_tokens(tiny_models, tmp_path):
    tiny = AutoTokenizer.from_pretrained(tiny_models / "tiny-s")
    llama_like = family_tokenizer("llama3")
    with pytest.raises(KoraftError, match=r"differ at 5 ids \(id 3000: teacher None, student '<\|begin_of_text"):
        check_same_vocabulary(tiny, llama_like, "tiny-s", "llama", ["안녕하세요"])

    # Same size, two tokens swapped: vocab_size alone would not notice.
    state = json.loads(tiny.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[100:102]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (tmp_path / "swapped").mkdir()
    tiny.save_pretrained(tmp_path / "swapped")
    (tmp_path / "swapped/tokenizer.json").write_text(json.dumps(state), encoding="utf-8")
    swapped = AutoTokenizer.from_pretrained(tmp_path / "swapped")
    assert len(swapped) == len(tiny)
    with pytest.raises(KoraftError, match=rf"differ at 2 ids \(id 100: teacher {first!r}, student {second!r}"):
        check_same_vocabulary(tiny, swapped, "tiny-m", "swapped", ["안녕하세요"])
    check_same_vocabulary(tiny, AutoTokenizer.from_pretrained(tiny_models / "tiny-m"), "a", "b", ["안녕하세요"])


@pytest.mark.parametrize("family, softcap", [("gemma2", 30.0), ("exaone4", None)])
def test_family_pairings_distill_through_their_real_architectures(family, softcap, params, raft_rows, tmp_path):
    """Teacher and student of one family share a tokenizer; Gemma-2's soft-capped logits are reported."""
    teacher_base = build_family_model(family, tmp_path / "teacher-base", seed=0)
    student_base = build_family_model(family, tmp_path / "student-base", seed=1)
    rows, val = raft_rows["train"][:4], raft_rows["val"][:2]
    train(rows, val, train_settings({"name": str(teacher_base), "family": family, "dtype": "float32",
                      "system_prompt": params["model"]["system_prompt"]},
          quick(params, "lora", steps=2)), paths(tmp_path / "train", tmp_path))
    settings = distill_params(params, steps=2, mode="online")
    settings["student"] = {"name": str(student_base), "family": family, "dtype": "float32"}
    metrics = distill(rows, val, distill_settings(settings),
                      where(tmp_path / "distill", tmp_path / "train/adapter", tmp_path))
    assert metrics["teacher"]["final_logit_softcapping"] == softcap
    assert ("note" in metrics["teacher"]) == (softcap is not None)
    assert metrics["student"]["family"] == family and metrics["steps"] == 2
    if softcap:
        teacher = AutoModelForCausalLM.from_pretrained(teacher_base)
        logits = teacher(input_ids=torch.tensor([[1, 2, 3]])).logits
        assert logits.abs().max() <= softcap  # transformers applies the cap; the KD targets see capped logits


@pytest.mark.parametrize("change, message", [
    (lambda d: d["loss"].update(alpha=1.5), "distill.loss.alpha: must be in [0.0, 1.0], got 1.5"),
    (lambda d: d["loss"].update(divergence="kl"), "distill.loss.divergence: must be one of forward_kl"),
    (lambda d: d["loss"].update(divergence="jsd", beta=1.0), "distill.loss.beta: must be strictly between 0 and 1"),
    (lambda d: d["loss"].update(temperature=0), "distill.loss.temperature: must be in [0.01, 100.0], got 0"),
    (lambda d: d["teacher"].update(mode="cached"), "distill.teacher.mode: must be one of offline, online"),
    (lambda d: d["teacher"].update(top_k=0), "distill.teacher.top_k: must be in [1, 1000000], got 0"),
    (lambda d: d.update(method="dora"), "distill.method: must be one of qlora, lora, full"),
    (lambda d: d["student"].update(preset="tiny-xl"), "distill.student.preset: unknown preset 'tiny-xl'"),
    (lambda d: d["lora"].update(rank=8), "distill.lora: unknown key"),
])
def test_bad_distill_params_are_one_line(change, message, params, raft_rows, teacher_adapter, tiny_models,
                                         tmp_path):
    settings = distill_params(params)
    change(settings)
    with pytest.raises((KoraftError, ParamError)) as error:
        distill(raft_rows["train"][:2], [], distill_settings(settings), where(tmp_path, teacher_adapter, tiny_models))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_packed_batch_gives_the_distillation_loss_of_the_padded_batch(mode, tiny_samples, tiny_models, tmp_path):
    """The same 8 samples as one padded batch and as one padding-free batch of bins: equal KD loss (the
    teacher rows follow the tokens through packing; the online teacher runs packed too)."""
    from koraft.training.packing import (
        pack,
        packing_plan,
        padding_free_collator,
        restore_attention,
        use_packed_attention,
    )

    tokenizer, samples = tiny_samples
    student = AutoModelForCausalLM.from_pretrained(tiny_models / "tiny-s")
    teacher = AutoModelForCausalLM.from_pretrained(tiny_models / "tiny-m")
    settings = KDSettings(alpha=0.3, divergence="forward_kl", temperature=2.0)
    vocabulary = len(tokenizer)
    kwargs = {"kd": settings, "vocabulary": vocabulary}
    if mode == "offline":
        top = teacher_top_k(teacher, samples, 20, settings.temperature, vocabulary, batch_size=8)
        samples = with_cache_rows(samples, top, 0)
        kwargs.update(top_k=top)
    else:
        kwargs.update(teacher=teacher)
    config = sft_config({"max_length": 768, "per_device_train_batch_size": 8, "seed": 0}, tmp_path / mode,
                        has_eval=False, early_stopping=False)
    padded = KDTrainer(model=student, args=config, train_dataset=Dataset.from_list(samples),
                       processing_class=tokenizer, **kwargs)
    bins = pack(samples, 768)
    assert len(bins) < len(samples)
    packed = KDTrainer(model=student, args=config, train_dataset=bins, processing_class=tokenizer,
                       data_collator=padding_free_collator(tokenizer.pad_token_id), **kwargs)
    losses = []
    for a_trainer, flat in ((padded, False), (packed, True)):
        batch = a_trainer._prepare_inputs(first_batch(a_trainer))
        assert ("position_ids" in batch) == flat and (batch["input_ids"].shape[0] == 1) == flat
        models = [student] + ([teacher] if mode == "online" else [])
        plans = [packing_plan(model, flat, 768) for model in models]
        for model, plan in zip(models, plans, strict=True):
            use_packed_attention(model, plan)
        losses.append(loss_on(a_trainer, batch))
        for model, plan in zip(models, plans, strict=True):
            restore_attention(model, plan)
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
