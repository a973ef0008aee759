"""Ask an OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp, Ollama, an API) many questions.

Used by generation (the teacher that writes questions and answers) and evaluation (an endpoint or a
served GGUF answering the test split at temperature 0, which is what a parity figure checks).

Requests run on a bounded pool with the openai client's retries (exponential backoff on connection
errors, 408, 409, 429 and 5xx). httpx's timeout bounds only the gap between bytes, so a server that
trickles a reply would hold a request for ever: each request has its own client, which a watchdog
closes once the request has run timeout_s x (retries + 1). A request that still fails is a counted
failure, scored as an empty answer; an endpoint that does not answer at all is one clear error, and
the requests still in flight are stopped rather than waited for.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from koraft.core.errors import KoraftError, ParamError

REFUSED = (400, 413, 422)  # the request itself is unacceptable (too long, filtered): asking again gives the same
NO_KEY = "no-key"  # sent when no api_key_env is named: never the caller's OPENAI_API_KEY
GIVE_UP_AFTER = 8  # this many failed requests before any success: the endpoint is not answering


@dataclass(frozen=True)
class Endpoint:
    name: str  # the system's name in metrics/eval.json
    base_url: str  # ends in /v1
    model: str
    api_key_env: str | None = None  # the environment variable holding the key; the key itself is never stored
    compare_to: str | None = None  # parity against this variant's answers
    # Engine-specific request fields, e.g. llama.cpp's repeat_penalty: its server defaults to 1.1, which
    # penalizes repeated tokens before the greedy pick and so changes answers at temperature 0.
    extra_body: dict[str, Any] | None = None


@dataclass
class EndpointAnswers:
    outputs: dict[str, str]
    stopped: dict[str, bool]
    new_tokens: dict[str, int]
    failures: dict[str, str] = field(default_factory=dict)  # record id -> why no answer came
    refused: dict[str, str] = field(default_factory=dict)  # record id -> the REFUSED status: an answer, not an outage
    seconds: float = 0.0


def check_base_url(base_url: str, key: str) -> str:
    """An endpoint's URL without its trailing slash; ParamError unless it is http(s)."""
    if not base_url.startswith(("http://", "https://")):
        raise ParamError(key, f"must start with http:// or https://, got {base_url!r}")
    return base_url.rstrip("/")


def check_key_env(env: Any, key: str) -> None:
    """api_key_env names an environment variable (the key itself never appears in params). Whatever else it
    holds is not echoed: it may be a key pasted in the wrong place."""
    if env is None:
        return
    if isinstance(env, str) and _looks_like_a_key(env):
        problem = "holds what looks like an API key"
    elif not isinstance(env, str) or not env.isidentifier():
        problem = "is not a variable name (letters, digits and _)"
    else:
        return
    raise ParamError(key, f"{problem}: put the key in an environment variable and name that variable here "
                          f"(the value is not shown)")


def _looks_like_a_key(value: str) -> bool:
    """Providers' key prefixes, or a long mix of cases and digits no one names a variable with."""
    if value.startswith(("sk-", "sk_", "hf_", "gsk_", "xai-", "AIza", "pk-")):
        return True
    return len(value) >= 32 and any(c.isdigit() for c in value) and any(c.islower() for c in value) and any(
        c.isupper() for c in value)


def client_for(endpoint: Endpoint, requests: dict[str, Any]):
    from openai import OpenAI

    key = NO_KEY
    if endpoint.api_key_env:
        key = os.environ.get(endpoint.api_key_env, "")
        if not key:
            raise KoraftError(f"endpoint {endpoint.name}: environment variable {endpoint.api_key_env} is not set")
    return OpenAI(base_url=endpoint.base_url, api_key=key, timeout=requests["timeout_s"],
                  max_retries=requests["retries"])


def check_reachable(client, endpoint: Endpoint) -> None:
    """One short request before the test split, so an endpoint that is down is one line, not N failures."""
    import openai

    try:
        listed = client.with_options(max_retries=1, timeout=min(10.0, client.timeout)).models.list()
        [model.id for model in listed.data]  # noqa: B018 - what a model list holds; HTML or other JSON fails here
    except openai.APIConnectionError as exc:
        raise KoraftError(f"endpoint {endpoint.name}: {endpoint.base_url} is unreachable ({exc})") from None
    except openai.APIStatusError as exc:
        if exc.status_code in (401, 403):
            raise KoraftError(f"endpoint {endpoint.name}: {endpoint.base_url} refused the key "
                              f"(HTTP {exc.status_code}); check {endpoint.api_key_env or 'api_key_env'}") from None
        # some servers do not list models; the chat requests will tell
    except Exception as exc:  # noqa: BLE001 - an answer that is not a model list, whatever the parser raised
        raise KoraftError(f"endpoint {endpoint.name}: {endpoint.base_url}/models did not answer an OpenAI model "
                          f"list ({type(exc).__name__}: {str(exc)[:120]}); is base_url the server's /v1 "
                          f"address?") from None


@dataclass(frozen=True)
class Completion:
    text: str
    stopped: bool  # False: cut at max_tokens
    prompt_tokens: int
    completion_tokens: int


def complete(client, model: str, messages: list[dict[str, str]], sampling: dict[str, Any],
             extra_body: dict[str, Any] | None = None) -> Completion:
    """One chat completion; `sampling` holds temperature and max_tokens, and top_p or seed only when set."""
    from openai.types.chat import ChatCompletion

    optional = {name: sampling[name] for name in ("top_p", "seed") if name in sampling}  # unset: not sent at all
    response = client.chat.completions.create(model=model, messages=messages, temperature=sampling["temperature"],
                                              max_tokens=sampling["max_tokens"], extra_body=extra_body, **optional)
    if not isinstance(response, ChatCompletion) or not response.choices:
        raise ValueError(f"not a chat completion: {str(response)[:80]!r}")
    choice = response.choices[0]
    text = choice.message.content if choice.message else None
    if not isinstance(text, str):
        raise ValueError("the completion has no text content")
    usage = response.usage
    return Completion(text, choice.finish_reason != "length", usage.prompt_tokens if usage else 0,
                      usage.completion_tokens if usage else 0)


def ask(client, endpoint: Endpoint, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, bool, int]:
    """(text, stopped before max_tokens, completion tokens) of one greedy chat completion."""
    reply = complete(client, endpoint.model, messages, {"temperature": 0.0, "max_tokens": max_tokens},
                     endpoint.extra_body)
    return reply.text, reply.stopped, reply.completion_tokens


def answer_all(endpoint: Endpoint, messages: dict[str, list[dict[str, str]]], max_tokens: int,
               requests: dict[str, Any]) -> EndpointAnswers:
    """Every record's answer from the endpoint; failures are counted, never silently dropped."""
    import openai

    probe = client_for(endpoint, requests)
    check_reachable(probe, endpoint)
    probe.close()
    limit = requests["timeout_s"] * (requests["retries"] + 1)
    result = EndpointAnswers(outputs={}, stopped={}, new_tokens={})
    started = time.perf_counter()
    waiting = iter(messages.items())
    running: dict[Future, tuple[str, Any, float]] = {}  # future -> (record id, its client, when it started)
    timed_out: set[str] = set()
    pool = ThreadPoolExecutor(max_workers=requests["concurrency"])

    def start_next() -> None:  # one request per free worker, so each starts when it is submitted
        for record_id, conversation in waiting:
            client = client_for(endpoint, requests)
            running[pool.submit(ask, client, endpoint, conversation, max_tokens)] = (
                record_id, client, time.monotonic())
            return

    try:
        for _ in range(requests["concurrency"]):
            start_next()
        while running:
            done, _ = wait(running, timeout=0.25, return_when=FIRST_COMPLETED)
            for future, (record_id, client, since) in running.items():
                if future not in done and time.monotonic() - since > limit and record_id not in timed_out:
                    timed_out.add(record_id)
                    client.close()  # the request's reads fail now, however slowly the server writes
            for future in done:
                record_id, client, _ = running.pop(future)
                client.close()
                start_next()
                try:
                    text, stopped, tokens = future.result()
                except Exception as exc:  # noqa: BLE001 - any failure of one request is that record's failure
                    if isinstance(exc, openai.APIStatusError) and exc.status_code in REFUSED:
                        result.failures[record_id] = result.refused[record_id] = \
                            f"HTTP {exc.status_code}: {str(exc)[:200]}"
                        continue
                    result.failures[record_id] = (f"no whole answer within {limit:g} s (eval.requests.timeout_s x "
                                                  f"(retries + 1))" if record_id in timed_out
                                                  else f"{type(exc).__name__}: {str(exc)[:200]}")
                    if not (result.outputs or result.refused) and len(result.failures) >= min(GIVE_UP_AFTER,
                                                                                               len(messages)):
                        raise KoraftError(f"endpoint {endpoint.name}: the first {len(result.failures)} requests "
                                          f"failed, e.g. {result.failures[record_id]}") from None
                    continue
                result.outputs[record_id], result.stopped[record_id] = text, stopped
                result.new_tokens[record_id] = tokens
    finally:
        for _, client, _ in running.values():  # giving up: stop what is in flight instead of waiting for it
            client.close()
        pool.shutdown(wait=False, cancel_futures=True)
    result.seconds = time.perf_counter() - started
    return result
