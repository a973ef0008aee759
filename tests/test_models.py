"""Presets resolve without downloading; tiny models build deterministically and load like real ones."""

from __future__ import annotations

import unicodedata

import pytest
import torch
from helpers import QUICK_PRETRAINING, ROOT
from transformers import AutoModelForCausalLM, AutoTokenizer

from koraft.core.errors import KoraftError
from koraft.data.synth import synthetic_corpus
from koraft.models.presets import FAMILIES, PRESETS, ensure_available, resolve_model
from koraft.models.pretrain import PretrainSpec, pretrain
from koraft.models.tiny import RAFT_MARKERS, TINY_SPECS, build_tiny_model, write_tokenizer

KOREAN = [
    "한결시의 인구는 약 12만 명이다.",
    unicodedata.normalize("NFD", "맥에서 입력한 자모"),  # decomposed jamo must survive too
    "ㄱㄴㄷ ㅏㅑ 《책》 ##begin_quote## 😀 <ANSWER>: 서울\n\t끝",
    "토큰화기가 본 적 없는 낱말: 뷁꿿쀍 and English, 123.45",
]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {name: build_tiny_model(name, root / name, QUICK_PRETRAINING) for name in ("tiny-s", "tiny-m")}


def test_tiny_build_is_byte_identical(tiny_dirs, tmp_path):
    again = build_tiny_model("tiny-s", tmp_path / "again", QUICK_PRETRAINING)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        assert (again / name).read_bytes() == (tiny_dirs["tiny-s"] / name).read_bytes(), name


def test_pretraining_lowers_the_loss_and_changes_the_weights(tmp_path):
    import torch

    from koraft.models.tiny import TINY_SPECS as SPECS

    random_weights = build_tiny_model("tiny-s", tmp_path / "random", PretrainSpec(epochs=0))
    model = AutoModelForCausalLM.from_pretrained(random_weights)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    report = pretrain(model, AutoTokenizer.from_pretrained(random_weights),
                      PretrainSpec(documents=160, epochs=3.0, block_size=256, batch_size=8, log_every=1000))
    assert report["steps"] > 20 and report["loss_final"] < 0.6 * report["loss_first"]
    assert any(not torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert SPECS["tiny-m"].pretraining.epochs > 0 and SPECS["tiny-s"].pretraining.epochs > 0  # the shipped base learns


def test_pretraining_entities_are_disjoint_from_the_shipped_sample():
    """No entity of data/raw/ (scripts/make_sample_data.py) is in the tiny models' pretraining corpus."""
    import importlib.util

    found = importlib.util.spec_from_file_location("make_sample_data", ROOT / "scripts" / "make_sample_data.py")
    make_sample_data = importlib.util.module_from_spec(found)
    found.loader.exec_module(make_sample_data)
    sample = {name for document, _ in synthetic_corpus(make_sample_data.NUM_DOCS, seed=make_sample_data.SEED)
              for name in document.entities}
    spec = TINY_SPECS["tiny-m"].pretraining
    pretraining = {name for document, _ in synthetic_corpus(spec.documents, questions_per_doc=4, seed=spec.seed,
                                                            names="pretrain") for name in document.entities}
    assert len(sample) > 500 and len(pretraining) > 3000
    assert not sample & pretraining
    raw = "".join(path.read_text(encoding="utf-8") for path in sorted(ROOT.glob("data/raw/*")))
    assert all(name in raw for name in list(sample)[:50])  # the names really are those of data/raw


def test_sentencepiece_model_and_hf_tokenizer_agree(tmp_path):
    """tokenizer.model (what llama.cpp's converter reads) and tokenizer.json give the same ids."""
    import sentencepiece

    tokenizer = write_tokenizer(tmp_path)
    processor = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    for text in [*KOREAN, " 앞에 공백", "끝에 공백 ", "두  칸\n\n줄"]:
        text = unicodedata.normalize("NFC", text)
        assert processor.encode(text) == tokenizer(text, add_special_tokens=False)["input_ids"], text
        assert processor.decode(processor.encode(text)) == text
    assert processor.piece_to_id("<|end|>") == tokenizer.eos_token_id


def test_raft_markers_are_one_token_each_and_reasoning_fits_the_eval_budget(tmp_path, params):
    """Spelt byte by byte, a chain-of-thought target took more than eval.max_new_tokens (measured: 70 to 86)."""
    from koraft.core.formats import completion
    from koraft.data.synth import synthetic_corpus

    tokenizer = write_tokenizer(tmp_path)
    for marker in RAFT_MARKERS:
        assert len(tokenizer(marker, add_special_tokens=False)["input_ids"]) == 1, marker
        assert tokenizer.decode(tokenizer(f"앞{marker}뒤", add_special_tokens=False)["input_ids"]) == f"앞{marker}뒤"
    reasoning = [completion({"cot": qa.cot, "answer": qa.answer})
                 for _, qas in synthetic_corpus(40, seed=9, cot_share=1.0) for qa in qas]
    lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in reasoning]
    assert max(lengths) + 1 <= params["eval"]["max_new_tokens"]  # + the end-of-turn token


def test_tiny_loads_through_from_pretrained_and_round_trips_korean(tiny_dirs):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["tiny-m"])
    for text in KOREAN:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
        assert tokenizer.unk_token_id not in ids  # byte fallback: nothing is unknown
    hangul = "한결시의 인구는 약 12만 명이다. 다해시는 멸치로 널리 알려져 있다."
    assert len(tokenizer(hangul)["input_ids"]) < len(hangul)  # BPE merges, not one token per byte
    model = AutoModelForCausalLM.from_pretrained(tiny_dirs["tiny-m"])
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tokenizer)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "질문"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt == "<|user|>질문<|end|><|assistant|>"


def test_tiny_presets_share_the_vocabulary_token_for_token(tiny_dirs):
    small, medium = (AutoTokenizer.from_pretrained(tiny_dirs[n]) for n in ("tiny-s", "tiny-m"))
    assert small.get_vocab() == medium.get_vocab()
    assert small.all_special_tokens == medium.all_special_tokens


def test_every_preset_has_a_family_and_resolves():
    for name, preset in PRESETS.items():
        assert preset.family in FAMILIES
        params = {"preset": name, "trust_remote_code": FAMILIES[preset.family].needs_remote_code}
        resolved = resolve_model(params)
        assert resolved.source == (preset.hub_id or f"models/base/{name}")
    assert FAMILIES["gemma2"].soft_caps_attention and not FAMILIES["gemma2"].supports_system_role
    assert FAMILIES["llama3"].pad_token and FAMILIES["llama3"].pad_token != "<|eot_id|>"


def test_preset_errors_are_one_line():
    cases = [
        ({"preset": "gpt-5"}, "unknown preset 'gpt-5'"),
        ({"preset": "exaone-3.5-7.8b"}, "model.trust_remote_code"),
        ({"name": "/models/mine", "family": "mistral"}, "model.family: 'mistral'"),
    ]
    for params, expected in cases:
        with pytest.raises(KoraftError, match=expected) as error:
            resolve_model(params)
        assert "\n" not in str(error.value)


def test_missing_hub_model_offline_names_the_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_model({"preset": "gemma-2-2b-it"})
    with pytest.raises(KoraftError, match="google/gemma-2-2b-it is not available offline.*model.name"):
        ensure_available(resolved)
    local = resolve_model({"name": str(tmp_path), "family": "gemma2"})
    ensure_available(local)  # a local folder needs no hub


def test_trust_remote_code_opens_only_with_a_real_boolean():
    with pytest.raises(KoraftError, match=r"model.trust_remote_code: must be true or false .*got 'false'"):
        resolve_model({"name": "some/folder", "family": "exaone3", "trust_remote_code": "false"}, "models/base")
    assert resolve_model({"name": "x", "family": "exaone3", "trust_remote_code": True}, "m").trust_remote_code


@pytest.mark.parametrize("damage", ["truncate", "unreadable"])
def test_a_damaged_model_folder_is_one_line_naming_it(damage, tiny_dirs, tmp_path):
    import os
    import shutil

    from koraft.models.loading import load_model

    folder = tmp_path / "tiny-s"
    shutil.copytree(tiny_dirs["tiny-s"], folder)
    weights = folder / "model.safetensors"
    if damage == "truncate":  # what an interrupted copy or a bad `dvc checkout` leaves
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        os.chmod(weights, 0)
        if os.access(weights, os.R_OK):  # root reads anything: make the file a folder instead
            os.chmod(weights, 0o600)
            weights.unlink()
            weights.mkdir()
    resolved = resolve_model({"name": str(folder), "family": "tiny", "dtype": "float32"}, tmp_path)
    with pytest.raises(KoraftError, match=rf"^{folder}: cannot be loaded \(") as error:
        load_model(resolved)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("pretraining, message", [
    ({"tiny-xl": {}}, r"base.pretraining: unknown keys \['tiny-xl'\]"),
    ({"tiny-m": {"epoch": 2}}, r"base.pretraining.tiny-m: unknown keys \['epoch'\]"),
    ({"tiny-s": {"learning_rate": "fast"}}, r"base.pretraining.tiny-s.learning_rate: must be a number"),
])
def test_bad_pretraining_params_are_one_line(pretraining, message):
    from koraft.models.tiny import check_pretraining

    with pytest.raises(KoraftError, match=message) as error:
        check_pretraining({"pretraining": pretraining})
    assert "\n" not in str(error.value)


def test_pretraining_params_override_the_preset_schedule():
    from koraft.models.tiny import check_pretraining

    specs = check_pretraining({"pretraining": {"tiny-m": {"epochs": 0.5}, "tiny-s": {}}})
    assert specs["tiny-m"].epochs == 0.5 and specs["tiny-m"].documents == TINY_SPECS["tiny-m"].pretraining.documents
    assert specs["tiny-s"] == TINY_SPECS["tiny-s"].pretraining


def test_an_image_text_gemma3_loads_its_language_model_alone(tmp_path):
    """Gemma 3 4B and up: the checkpoint holds a vision tower too; koraft trains and serves the text model."""
    import dataclasses

    from safetensors.torch import load_file
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    from koraft.models.loading import linear_layer_names, load_model

    text = Gemma3TextConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=256)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    torch.manual_seed(0)
    Gemma3ForConditionalGeneration(Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                                image_token_index=299, boi_token_index=297, eoi_token_index=298)
                                   ).save_pretrained(tmp_path)
    assert PRESETS["gemma-3-4b-it"].image_text and not PRESETS["gemma-3-1b-it"].image_text
    resolved = dataclasses.replace(resolve_model({"name": str(tmp_path), "family": "gemma3", "dtype": "float32"}),
                                   image_text=True)
    model = load_model(resolved)
    saved = load_file(tmp_path / "model.safetensors")
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert not any("vision" in name for name, _ in model.named_parameters())
    for name, tensor in model.state_dict().items():  # every text weight is the checkpoint's, none left random
        source = "lm_head.weight" if name == "lm_head.weight" else "language_model." + name
        expected = saved.get(source, saved["language_model.model.embed_tokens.weight"])
        assert torch.equal(tensor, expected), name
    assert "fc1" not in linear_layer_names(resolved) and "q_proj" in linear_layer_names(resolved)
