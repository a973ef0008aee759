"""Export and serving on the real engines: llama.cpp's converter, quantizer and server, on loopback."""

from __future__ import annotations

import copy
import json
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from family_models import build_family_model
from helpers import ROOT, model_params, paths, quick
from transformers import AutoModelForCausalLM, AutoTokenizer

from koraft.core.errors import KoraftError, ParamError
from koraft.core.formats import user_message
from koraft.evaluation.config import load_eval
from koraft.evaluation.evaluate import evaluate
from koraft.evaluation.served import GREEDY, parity, visible
from koraft.evaluation.systems import EvalPaths
from koraft.inference.endpoints import Endpoint, answer_all
from koraft.models.chat import render_prompt
from koraft.models.presets import FAMILIES
from koraft.models.samples import SampleTokenizer, build_prompts
from koraft.serving.export import export_model, load_export
from koraft.serving.llama_cpp import llama_server
from koraft.serving.ollama import TEMPLATES
from koraft.serving.serve import vllm_command
from koraft.training.config import train_settings
from koraft.training.train import train

REQUESTS = {"concurrency": 2, "timeout_s": 5.0, "retries": 0}


def export_settings(params: dict, **gguf) -> dict:
    changed = copy.deepcopy(params)
    changed["export"]["gguf"].update(gguf)
    return load_export(changed)


def render_go(template: str, system: str, prompt: str) -> str:
    """Ollama's template for one turn, for the subset the Modelfiles use: if/else/end on .System, fields."""
    def branch(match: re.Match) -> str:
        return match.group(1) if system else (match.group(2) or "")

    text = re.sub(r"\{\{ if \.System \}\}(.*?)(?:\{\{ else \}\}(.*?))?\{\{ end \}\}", branch, template, flags=re.S)
    assert "{{ if" not in text
    return text.replace("{{ .System }}", system).replace("{{ .Prompt }}", prompt)


@pytest.mark.parametrize("family", ["tiny", "exaone4", "gemma2", "gemma3", "gemma3_pt", "llama3", "qwen2"])
def test_ollama_template_renders_what_the_chat_template_renders(family, tiny_models, tmp_path):
    folder = tiny_models / "tiny-s" if family == "tiny" else build_family_model(family, tmp_path / family)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    system = "당신은 한국어 도우미입니다."
    record = {"instruction": "답하세요.", "documents": ["한결시는 강원도에 있다."],
              "question": "한결시는 어디에 있나요?"}
    expected = render_prompt(tokenizer, FAMILIES[family], system, record)
    bos = tokenizer.bos_token if tokenizer.bos_token and expected.startswith(tokenizer.bos_token) else ""
    assert render_go(TEMPLATES[family], system, user_message(record)) == expected.removeprefix(bos)


@pytest.fixture(scope="module")
def exported(params, raft_rows, tiny_models, tmp_path_factory) -> Path:
    """tiny-s with a briefly trained LoRA adapter, exported by the export stage's function."""
    root = tmp_path_factory.mktemp("export")
    where = paths(root, tiny_models)
    train(raft_rows["train"][:8], [],
          train_settings(model_params(params), quick(params, "lora", steps=6, learning_rate=1.0e-2)), where)
    metrics = export_model(where.adapter, root / "export", export_settings(params, outtype="f32"))
    (root / "export.json").write_text(json.dumps(metrics))
    return root


@pytest.mark.slow
def test_export_writes_a_merged_folder_ggufs_and_a_modelfile(exported, tiny_models):
    out, metrics = exported / "export", json.loads((exported / "export.json").read_text())
    merged = out / "merged"
    generation = json.loads((merged / "generation_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert generation["eos_token_id"] == [tokenizer.convert_tokens_to_ids("<|end|>")]
    assert tokenizer.chat_template and "quantization_config" not in json.loads((merged / "config.json").read_text())
    # what llama.cpp's converter reads: SentencePiece's scores, and which added tokens are special
    assert (merged / "tokenizer.model").read_bytes() == (tiny_models / "tiny-s" / "tokenizer.model").read_bytes()
    added = json.loads((merged / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert {token["content"]: token["special"] for token in added.values()}["<|user|>"] is False
    assert set(metrics["gguf"]) == {"f32", "q8_0", "q4_0"}  # tiny-s is 64 wide: no k-quant
    assert "not a multiple of 256" in metrics["skipped"]["q4_k_m"]
    sizes = {kind: (out / "gguf" / values["file"]).stat().st_size for kind, values in metrics["gguf"].items()}
    assert sizes == {kind: values["bytes"] for kind, values in metrics["gguf"].items()}
    assert sizes["f32"] > sizes["q8_0"] > sizes["q4_0"]
    modelfile = (out / "gguf" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-q8_0.gguf\n") and 'PARAMETER stop "<|end|>"' in modelfile
    assert 'SYSTEM """당신은 주어진 문서를' in modelfile and "<|assistant|>" in modelfile
    assert not (exported / "export.partial").exists()


@pytest.mark.slow
def test_a_failed_export_leaves_no_output_behind(exported, params):
    changed = copy.deepcopy(params)
    changed["export"]["gguf"]["quantizations"] = ["q4_k_m"]
    changed["export"]["ollama"]["gguf"] = "q4_k_m"
    out = exported / "failed"
    with pytest.raises(KoraftError, match="export.ollama.gguf: q4_k_m was skipped: hidden_size 64"):
        export_model(exported / "adapter", out, load_export(changed))
    assert not out.exists() and not (exported / "failed.partial").exists()


@pytest.mark.slow
def test_gguf_tokenizes_and_answers_greedily_as_transformers_does(exported, raft_rows):
    from llama_cpp import Llama

    merged = exported / "export" / "merged"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged).eval()
    llm = Llama(model_path=str(exported / "export" / "gguf" / "model-f32.gguf"), n_ctx=512, n_threads=2,
                verbose=False)
    system = json.loads((merged / "koraft_manifest.json").read_text())["system_prompt"]
    encoder = SampleTokenizer(tokenizer, FAMILIES["tiny"], system)
    for row in raft_rows["train"] + raft_rows["test"]:  # the rendered text, as a server tokenizes it
        text, ids = encoder.prompt(row)
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids, row["id"]
    fitted = build_prompts(raft_rows["test"][:6], encoder, 448)
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    for ids in fitted.prompts:
        with torch.no_grad():
            expected = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False,
                                      eos_token_id=end, pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
        llm.reset()
        produced = []
        for token in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            produced.append(token)
            if token == end or len(produced) == 24:
                break
        assert produced == expected


@pytest.mark.slow
def test_llama_cpp_server_answers_an_openai_chat_request_on_loopback(exported):
    from openai import OpenAI

    merged = exported / "export" / "merged"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged).eval()
    messages = [{"role": "system", "content": "당신은 도우미입니다."},
                {"role": "user", "content": "한결시는 어디에 있나요?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    with torch.no_grad():
        expected = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, pad_token_id=0,
                                  eos_token_id=tokenizer.convert_tokens_to_ids("<|end|>"))[0, len(ids):]
    with llama_server(exported / "export" / "gguf" / "model-f32.gguf", "koraft", 512) as server:
        assert server.url.startswith("http://127.0.0.1:")
        client = OpenAI(base_url=server.url, api_key="no-key")
        greedy = client.chat.completions.create(model="koraft", messages=messages, temperature=0.0, max_tokens=16,
                                                extra_body=GREEDY)
        default = client.chat.completions.create(model="koraft", messages=messages, temperature=0.0, max_tokens=16)
    assert greedy.choices[0].message.content == visible(tokenizer.decode(expected, skip_special_tokens=True))
    # The trap the served variant avoids: the server's default repeat penalty changes the greedy answer.
    assert default.choices[0].message.content != greedy.choices[0].message.content


@pytest.mark.slow
def test_served_variant_is_scored_with_its_parity(exported, params, raft_rows, tiny_models):
    settings = copy.deepcopy(params)
    settings["model"]["preset"] = "tiny-s"  # the exported adapter's base
    settings["eval"]["variants"] = {"finetuned": True, "served": True}
    settings["eval"]["conditions"].update({"retrieved": False, "closed_book": False})  # tests/test_conditions.py
    settings["eval"]["perplexity"]["variants"] = []  # tests/test_evaluate.py scores it
    settings["eval"]["served"]["gguf"] = ["f32", "q4_0"]
    settings["eval"]["bootstrap"]["resamples"] = 200
    rows = raft_rows["test"][:8]
    where = EvalPaths(adapter=exported / "adapter", student=exported / "none", tiny_models=tiny_models,
                      predictions=exported, exports=exported / "export")
    metrics, review = evaluate(rows, load_eval(settings), where)
    for name in ("served", "served_q4_0"):
        same = sum(row["outputs"][name]["answer"] == row["outputs"]["finetuned"]["answer"] for row in review)
        assert metrics[name]["parity"] == {"compared_to": "finetuned", "answers": round(same / len(rows), 4),
                                           "outputs": metrics[name]["parity"]["outputs"], "records": len(rows)}
        assert metrics[name]["requests"]["failed"] == 0 and metrics[name]["cost"]["generated_tokens_per_s"] > 0
    assert metrics["served"]["parity"]["answers"] >= 0.75, metrics["served"]["parity"]


class Misbehaving(BaseHTTPRequestHandler):
    """An OpenAI-looking server that lists models, then answers chat requests with garbage or slowly."""

    mode = "garbage"

    def do_GET(self):  # noqa: N802 - the http.server interface
        if self.mode in ("html models", "json models"):  # not a model list: a web page, or some other JSON
            self.reply(200, "<html>login</html>" if self.mode == "html models" else json.dumps({"ok": True}))
            return
        self.reply(200, json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}))

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.mode == "slow":
            time.sleep(1.0)
        if self.mode == "trickle":  # a 200 that promises 100000 bytes, then sends one every 0.5 s
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100000):
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:  # the client hung up
                    return
                time.sleep(0.5)
            return
        if self.mode == "hang":
            time.sleep(60)
            return
        self.reply(200, "<html>not json</html>" if self.mode == "garbage" else "{}")

    def reply(self, status: int, body: str):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def misbehaving():
    def start(mode: str) -> str:
        handler = type("Handler", (Misbehaving,), {"mode": mode})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    servers = []
    yield start
    for server in servers:
        server.shutdown()


def conversations(count: int) -> dict:
    return {f"r{i}": [{"role": "user", "content": "질문"}] for i in range(count)}


@pytest.mark.parametrize("mode", ["garbage", "slow", "empty"])
def test_an_endpoint_that_answers_badly_stops_with_one_line_not_a_hang(mode, misbehaving):
    endpoint = Endpoint("bad", misbehaving(mode), "m")
    requests = {**REQUESTS, "timeout_s": 0.3}
    started = time.monotonic()
    with pytest.raises(KoraftError, match=r"endpoint bad: the first 8 requests failed"):
        answer_all(endpoint, conversations(20), 8, requests)
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("mode", ["trickle", "hang"])
def test_timeout_s_bounds_a_request_however_the_server_writes_and_giving_up_stops_what_is_in_flight(
        mode, misbehaving):
    """httpx's timeout is the gap between bytes: a reply trickled one byte at a time never trips it."""
    endpoint = Endpoint("slow", misbehaving(mode), "m")
    requests = {**REQUESTS, "timeout_s": 1.5, "retries": 0, "concurrency": 4}
    started = time.monotonic()
    with pytest.raises(KoraftError, match=r"endpoint slow: the first 8 requests failed, e.g. no whole answer "
                                          r"within 1.5 s") if mode == "trickle" else pytest.raises(KoraftError):
        answer_all(endpoint, conversations(20), 8, requests)
    # Two rounds of 4 requests at 1.5 s each, and the 4 in flight stopped, not awaited: well under 2 x 60 s.
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("mode", ["html models", "json models"])
def test_a_model_list_that_is_not_one_is_a_line_naming_the_endpoint(mode, misbehaving):
    url = misbehaving(mode)
    with pytest.raises(KoraftError, match=rf"endpoint odd: {url}/models did not answer an OpenAI model list "
                                          r"\(.+\); is base_url the server's /v1 address\?"):
        answer_all(Endpoint("odd", url, "m"), conversations(2), 8, REQUESTS)


def test_an_endpoint_that_is_down_is_one_clear_line():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(KoraftError, match=rf"endpoint down: http://127.0.0.1:{port}/v1 is unreachable"):
        answer_all(Endpoint("down", f"http://127.0.0.1:{port}/v1", "m"), conversations(3), 8,
                   {**REQUESTS, "timeout_s": 1.0})


def test_a_missing_api_key_is_named_and_never_printed(monkeypatch):
    monkeypatch.delenv("KORAFT_TEST_KEY", raising=False)
    with pytest.raises(KoraftError, match="environment variable KORAFT_TEST_KEY is not set"):
        answer_all(Endpoint("hosted", "http://127.0.0.1:9/v1", "m", api_key_env="KORAFT_TEST_KEY"),
                   conversations(1), 8, REQUESTS)


@pytest.mark.parametrize("change, message", [
    ({"gguf": {"outtype": "f64", "quantizations": []}}, "export.gguf.outtype: must be one of f32, f16, bf16"),
    ({"gguf": {"outtype": "f32", "quantizations": ["q3"]}}, "export.gguf.quantizations: a list of distinct"),
    ({"ollama": {"gguf": "q6_k"}}, "export.ollama.gguf: names the GGUF the Modelfile uses"),
    ({"dtype": "int8"}, "export.dtype: must be auto"),
])
def test_bad_export_params_are_one_line(change, message, params):
    changed = copy.deepcopy(params)
    changed["export"].update(change)
    with pytest.raises(ParamError, match=re.escape(message)):
        load_export(changed)


def test_vllm_serves_the_adapter_as_a_lora_module_or_the_merged_folder(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 16}))
    manifest = {"method": "lora", "system_prompt": "", "model": {
        "preset": "exaone-4.0-1.2b", "family": "exaone4", "source": "LGAI-EXAONE/EXAONE-4.0-1.2B",
        "revision": "abc123", "dtype": "bfloat16", "trust_remote_code": False}}
    (adapter / "koraft_manifest.json").write_text(json.dumps(manifest))
    command = vllm_command(adapter, None, "127.0.0.1", 8000, 4096)
    assert command[:3] == ["vllm", "serve", "LGAI-EXAONE/EXAONE-4.0-1.2B"]
    assert command[command.index("--lora-modules") + 1] == f"koraft={adapter}"
    assert command[command.index("--max-lora-rank") + 1] == "16" and "--revision" in command
    assert command[command.index("--host") + 1] == "127.0.0.1" and "--trust-remote-code" not in command
    merged = vllm_command(None, adapter, "127.0.0.1", 8000, 4096)
    assert merged[:3] == ["vllm", "serve", str(adapter)] and "--enable-lora" not in merged


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "not a gguf"])
def test_serving_a_damaged_gguf_is_one_line_naming_the_file(exported, damage, tmp_path):
    whole = (exported / "export" / "gguf" / "model-q8_0.gguf").read_bytes()
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(whole[:len(whole) // 2] if damage == "truncated" else b"<html>404</html>")
    done = subprocess.run([sys.executable, "-m", "koraft.serving.serve", "llama.cpp", "--gguf", str(gguf)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"serve: error: {gguf}: llama.cpp cannot load it: a truncated or damaged GGUF; export it "
                           f"again (dvc repro -f export)\n")


def test_serve_command_prints_the_url_and_serves_on_loopback(exported):
    from openai import OpenAI

    from koraft.serving.llama_cpp import free_port

    port = free_port("127.0.0.1")
    gguf = exported / "export" / "gguf" / "model-q8_0.gguf"
    process = subprocess.Popen([sys.executable, "-m", "koraft.serving.serve", "llama.cpp", "--gguf", str(gguf),
                                "--port", str(port), "--max-length", "512"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        first = process.stdout.readline()
        assert first.strip() == f"serve: llama.cpp at http://127.0.0.1:{port}/v1, model 'koraft'"
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="no-key", max_retries=0, timeout=5)
        deadline = time.monotonic() + 60
        while True:
            try:
                models = client.models.list()
                break
            except Exception:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.3)
        assert [model.id for model in models.data] == ["koraft"]
        reply = client.chat.completions.create(model="koraft", messages=[{"role": "user", "content": "안녕"}],
                                               max_tokens=4, temperature=0.0)
        assert reply.choices[0].message.content is not None
    finally:
        process.terminate()
        process.wait(timeout=10)
    with pytest.raises(OSError):  # the engine ran in the command's own process: nothing is left serving
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_parity_takes_a_partial_character_as_the_same_tokens():
    """transformers decodes a byte piece that is no whole character as U+FFFD, llama.cpp leaves it out."""
    from koraft.evaluation.answers import extract_answer

    served = {"a": "서울", "b": "부산시", "c": "대구"}
    finetuned = {"a": "서울\ufffd", "b": "부산", "c": "대구"}
    rows = [{"id": key} for key in served]
    answers = [extract_answer(served[row["id"]], False) for row in rows]
    reference = [extract_answer(finetuned[row["id"]], False) for row in rows]
    assert parity(served, finetuned, answers, reference, rows, "finetuned") == {
        "compared_to": "finetuned", "answers": round(2 / 3, 4), "outputs": round(2 / 3, 4), "records": 3}
