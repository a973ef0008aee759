"""Served systems: OpenAI-compatible endpoints from params, and the exported GGUFs on llama.cpp's server.

Both answer the same fitted prompts as the fine-tuned variant (its tokenizer, template inputs and
system prompt), sent as chat messages, so an endpoint serving that model should give the same
answers: `parity` is the share of test records where it does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from koraft.core.errors import KoraftError
from koraft.core.formats import user_message
from koraft.evaluation.config import EvalSettings
from koraft.evaluation.systems import EvalPaths, SystemOutput
from koraft.inference.endpoints import Endpoint, answer_all
from koraft.models.samples import SampleTokenizer, build_prompts

SERVED_MODEL = "koraft-finetuned"  # the model name llama.cpp's server answers to
GREEDY = {"repeat_penalty": 1.0}  # llama.cpp's server applies 1.1 unless told: not the greedy answer


def endpoint_prompts(rows: list[dict], settings: EvalSettings, paths: EvalPaths):
    """(conversation per fitted record id, the PromptSet): fitted as the fine-tuned variant fits them."""
    from koraft.models.chat import chat_messages
    from koraft.models.loading import load_tokenizer
    from koraft.models.manifest import MANIFEST
    from koraft.models.presets import ensure_available, resolve_model
    from koraft.models.trained import load_trained_tokenizer, trained_model_info

    if (paths.adapter / MANIFEST).exists():
        manifest, resolved = trained_model_info(paths.adapter)
        tokenizer, system_prompt = load_trained_tokenizer(paths.adapter, resolved), manifest["system_prompt"]
    else:  # no fine-tuned model: fit as the base model would
        resolved = resolve_model(settings.model, paths.tiny_models)
        ensure_available(resolved)
        tokenizer, system_prompt = load_tokenizer(resolved), settings.system_prompt
    fitted = build_prompts(rows, SampleTokenizer(tokenizer, resolved.family, system_prompt), settings.prompt_budget)
    by_id = {row["id"]: row for row in rows}
    conversations = {record_id: chat_messages(resolved.family, system_prompt,
                                              user_message({**by_id[record_id], "documents": documents}))
                     for record_id, documents in zip(fitted.ids, fitted.documents, strict=True)}
    return conversations, fitted


def run_endpoint(endpoint: Endpoint, rows: list[dict], settings: EvalSettings, paths: EvalPaths,
                 cost_extra: dict[str, Any] | None = None) -> SystemOutput:
    """The endpoint's SystemOutput: its answers, failures scored as empty, its latency and tokens/s."""
    conversations, fitted = endpoint_prompts(rows, settings, paths)
    answers = answer_all(endpoint, conversations, settings.max_new_tokens, settings.requests)
    outputs = {record_id: answers.outputs.get(record_id, "") for record_id in fitted.ids}
    generated = sum(answers.new_tokens.values())
    cost = {"latency_per_sample_s": round(answers.seconds / max(len(fitted.ids), 1), 4),
            "generated_tokens_per_s": round(generated / answers.seconds, 1) if answers.seconds else None,
            "concurrency": settings.requests["concurrency"], **(cost_extra or {})}
    lengths = [len(ids) for ids in fitted.prompts]
    return SystemOutput(outputs=outputs, documents=dict(zip(fitted.ids, fitted.documents, strict=True)),
                        stopped={record_id: answers.stopped.get(record_id, True) for record_id in fitted.ids},
                        new_tokens=answers.new_tokens, seconds=answers.seconds, unfit=fitted.unfit, cost=cost,
                        prompts=fitted.report(settings.prompt_budget, lengths), failures=answers.failures,
                        compare_to=endpoint.compare_to)


def run_served(name: str, kind: str, rows: list[dict], settings: EvalSettings, paths: EvalPaths) -> SystemOutput:
    """One exported GGUF of the fine-tuned model on llama.cpp's server on 127.0.0.1, as an endpoint."""
    from koraft.serving.export import gguf_name
    from koraft.serving.llama_cpp import llama_server

    if paths.exports is None:
        raise KoraftError("eval.variants.served: this run has no export folder (--exports)")
    gguf = paths.exports / "gguf" / gguf_name(kind)
    if not gguf.parent.is_dir():
        raise KoraftError(f"eval.variants.served: {gguf.parent} does not exist; run `dvc repro export` first")
    if not gguf.is_file():
        made = sorted(path.stem.removeprefix("model-") for path in gguf.parent.glob("*.gguf"))
        raise KoraftError(f"eval.served.gguf: {gguf} does not exist; the export made {', '.join(made) or 'none'}")
    served = settings.served
    # llama-cpp-python's server runs one request at a time behind a lock, so more in flight only queue
    # (measured: 0.113 s per sample at 1, 0.126 at 4); one at a time, in order, also makes its prompt-prefix
    # cache reuse the same from run to run.
    settings = dataclasses.replace(settings, requests={**settings.requests, "concurrency": 1})
    with llama_server(gguf, SERVED_MODEL, settings.max_length, threads=served.get("threads")) as server:
        endpoint = Endpoint(name, server.url, server.model, compare_to=served.get("compare_to", "finetuned"),
                            extra_body=GREEDY)
        try:
            return run_endpoint(endpoint, rows, settings, paths, {"gguf": gguf.name, "gguf_bytes": gguf.stat().st_size})
        except KoraftError as error:
            if server.process.poll() is not None:  # the engine died under the requests: say so, not "connection"
                raise KoraftError(f"llama.cpp's server crashed (exit {server.process.returncode}) serving "
                                  f"{gguf.name}; leave that type out of eval.served.gguf") from error
            raise


def visible(text: str) -> str:
    """Text without U+FFFD: transformers writes it for a byte piece that is no whole UTF-8 character, llama.cpp
    leaves such a piece out."""
    return text.replace("\ufffd", "")


def parity(outputs: dict[str, str], reference: dict[str, str], answers: list, reference_answers: list,
           rows: list[dict], compare_to: str) -> dict[str, Any]:
    """The share of test records where the served answer (and the raw output) equals the reference variant's,
    both `visible`: the same tokens are the same answer whichever engine decoded them."""
    same_answers = sum(visible(a.text) == visible(b.text) for a, b in zip(answers, reference_answers, strict=True))
    same_outputs = sum(visible(outputs[row["id"]]) == visible(reference[row["id"]]) for row in rows)
    return {"compared_to": compare_to, "answers": round(same_answers / len(rows), 4),
            "outputs": round(same_outputs / len(rows), 4), "records": len(rows)}
