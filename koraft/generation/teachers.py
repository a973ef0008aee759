"""The teacher that writes questions and answers: any OpenAI-compatible endpoint, or a transformers model.

`openai` sends chat completions to vLLM, llama.cpp's server, Ollama or a hosted API on a bounded pool
of threads, each request with a timeout; the openai client retries connection errors, 408, 409, 429
and 5xx with exponential backoff (honouring Retry-After). A request the endpoint refuses (400, 413,
422) is that item's reject, and is cached so it is not paid for again. Anything else that still
fails stops the run once the requests in flight are back: every reply so far is cached, so the
rerun resumes there. `transformers` loads a preset or a model folder and decodes greedily in
batches, on a GPU when there is one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from koraft.core.errors import KoraftError
from koraft.core.hashing import folder_sha256
from koraft.inference.call_cache import Reply
from koraft.inference.endpoints import REFUSED, Endpoint, check_reachable, client_for, complete

Call = tuple[str, list[dict[str, str]]]  # (cache key, messages)


def teacher_identity(teacher: dict[str, Any]) -> dict[str, Any]:
    """What the cache key names the teacher by: backend, model and revision (a local folder's content hash)."""
    if teacher["backend"] == "openai":
        return {"backend": "openai", "model": teacher["model"], "revision": teacher.get("revision")}
    resolved = teacher["resolved"]
    revision = resolved.revision
    if revision is None and Path(resolved.source).is_dir():
        revision = "sha256:" + folder_sha256(Path(resolved.source))  # a folder has no revision: its content is one
    return {"backend": "transformers", "model": resolved.source, "revision": revision}


def ask_teacher(teacher: dict[str, Any], sampling: dict[str, Any], calls: list[Call]) -> Iterator[tuple[str, Reply]]:
    """(key, reply) for every call, in the order replies arrive."""
    if teacher["backend"] == "openai":
        return _openai_replies(teacher, sampling, calls)
    return _transformers_replies(teacher, sampling, calls)


class TeacherStopped(KoraftError):
    pass


def _openai_replies(teacher: dict[str, Any], sampling: dict[str, Any], calls: list[Call]
                    ) -> Iterator[tuple[str, Reply]]:
    import openai

    endpoint = Endpoint("teacher", teacher["base_url"], teacher["model"], teacher.get("api_key_env"),
                        extra_body=teacher.get("extra_body"))
    client = client_for(endpoint, teacher)
    check_reachable(client, endpoint)
    pool = ThreadPoolExecutor(max_workers=teacher["concurrency"])
    waiting = iter(calls)
    pending: dict = {}
    failure: str | None = None

    def submit_next() -> None:
        for key, messages in waiting:
            pending[pool.submit(_reply, client, teacher, messages, sampling)] = key
            return

    try:
        for _ in range(teacher["concurrency"] * 2):  # a bounded window: memory holds only what is in flight
            submit_next()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                key = pending.pop(future)
                try:
                    yield key, future.result()
                except openai.APIStatusError as exc:
                    if exc.status_code in REFUSED:
                        yield key, Reply("", 0, 0, True, refused=f"HTTP {exc.status_code}: {str(exc)[:200]}")
                    elif exc.status_code in (401, 403):
                        raise KoraftError(f"generate.teacher: {teacher['base_url']} refused the key (HTTP "
                                          f"{exc.status_code}); check {teacher.get('api_key_env') or 'api_key_env'}"
                                          ) from None
                    else:
                        failure = failure or f"HTTP {exc.status_code}: {str(exc)[:200]}"
                except Exception as exc:  # noqa: BLE001 - connection errors, timeouts: the run stops, resumable
                    failure = failure or f"{type(exc).__name__}: {str(exc)[:200]}"
                if failure is None:
                    submit_next()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if failure is not None:
        raise TeacherStopped(f"generate.teacher: a request to {teacher['base_url']} failed after "
                             f"{teacher['retries']} retries ({failure}); every reply so far is cached: rerun "
                             f"`dvc repro generate` to resume")


def _reply(client, teacher: dict[str, Any], messages: list[dict[str, str]], sampling: dict[str, Any]) -> Reply:
    answer = complete(client, teacher["model"], messages, sampling, teacher.get("extra_body"))
    return Reply(answer.text, answer.prompt_tokens, answer.completion_tokens, answer.stopped)


def _transformers_replies(teacher: dict[str, Any], sampling: dict[str, Any], calls: list[Call]
                          ) -> Iterator[tuple[str, Reply]]:
    import torch

    from koraft.inference.decoding import greedy_generate
    from koraft.models.chat import chat_messages, stop_token_ids
    from koraft.models.loading import load_model, load_tokenizer
    from koraft.models.presets import ensure_available

    resolved = teacher["resolved"]
    ensure_available(resolved, "generate.teacher.model")
    tokenizer = load_tokenizer(resolved)
    model = load_model(resolved, key="generate.teacher").eval()
    if torch.cuda.is_available():
        model = model.to("cuda")
    stops = stop_token_ids(model, tokenizer, resolved.family)
    batch = teacher["batch_size"]
    started = time.perf_counter()
    for first in range(0, len(calls), batch):
        part = calls[first:first + batch]
        # [system, user] as sent to an endpoint; the family's quirks (Gemma-2 has no system turn) applied here
        conversations = [chat_messages(resolved.family, messages[0]["content"], messages[-1]["content"])
                         for _, messages in part]
        prompts = [tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                                 return_dict=False, **resolved.family.template_kwargs)
                   for conversation in conversations]
        generation = greedy_generate(model, tokenizer, prompts, stops, sampling["max_tokens"], batch)
        for index, (key, _) in enumerate(part):
            yield key, Reply(generation.texts[index], len(prompts[index]), generation.new_tokens[index],
                             generation.stopped[index])
    print(f"generate: the transformers teacher answered {len(calls)} calls in {time.perf_counter() - started:.1f} s")
