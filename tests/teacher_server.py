"""A scripted teacher behind a real OpenAI-compatible HTTP server on 127.0.0.1, for generate's tests and benchmark.

It writes what a good teacher would, from the prompt alone: for a questions prompt, one question per
sentence of the chunk ("다음 문장은 무엇을 말하는가: <sentence>?"); for an answer prompt, a chain of
thought quoting that sentence and `<ANSWER>:` its last word. It can answer 429 first, die after
some replies, or take a fixed time per request, and it logs every prompt it answered. It also serves
/v1/embeddings (hashed character bigrams), for the evaluation's embeddings retriever.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

QUESTION = "다음 문장은 무엇을 말하는가: {sentence}?"


def chunk_of(user: str) -> str:
    return user.split("문서:\n", 1)[-1].split("\n\n질문:", 1)[0].strip()


def scripted_reply(user: str) -> str:
    if "\n\n질문: " in user:
        question = user.rsplit("\n\n질문: ", 1)[1]
        sentence = question.split(": ", 1)[-1].removesuffix("?")
        answer = sentence.rstrip(".").split()[-1]
        return f"문서에 따르면 ##begin_quote##{sentence}##end_quote## 라고 한다.\n<ANSWER>: {answer}"
    count = int(re.search(r"(\d+)개", user).group(1))
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", chunk_of(user)) if len(s.strip()) > 8]
    return "\n".join(f"{i + 1}. " + QUESTION.format(sentence=s) for i, s in enumerate(sentences[:count]))


def bigram_vector(text: str, size: int = 512) -> list[float]:
    """A hashed bag of character bigrams: an embedding that ranks documents sharing a question's words."""
    vector = [0.0] * size
    for first, second in zip(text, text[1:], strict=False):
        if not (first + second).isspace():
            vector[zlib.crc32((first + second).encode()) % size] += 1.0
    return vector


class TeacherServer:
    def __init__(self, reply=scripted_reply, rate_limited: int = 0, die_after: int | None = None,
                 latency_s: float = 0.0) -> None:
        self.reply, self.rate_limited, self.die_after, self.latency_s = reply, rate_limited, die_after, latency_s
        self.answered: list[str] = []  # SHA-256 of each answered user message, in order
        self.requests = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - the http.server interface
                self.send(200, {"object": "list", "data": [{"id": "teacher", "object": "model"}]})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests += 1
                    number = owner.requests
                    dying = owner.die_after is not None and len(owner.answered) >= owner.die_after
                if dying:  # the process is gone: this connection drops, and no new one is accepted
                    threading.Thread(target=owner.stop, daemon=True).start()
                    self.close_connection = True
                    self.connection.close()
                    return
                if number <= owner.rate_limited:
                    self.send(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                              {"retry-after-ms": "100"})
                    return
                time.sleep(owner.latency_s)
                if self.path.endswith("/embeddings"):
                    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                    self.send(200, {"object": "list", "model": body["model"], "usage": {"prompt_tokens": 0,
                                                                                          "total_tokens": 0},
                                    "data": [{"object": "embedding", "index": i, "embedding": bigram_vector(text)}
                                             for i, text in enumerate(texts)]})
                    return
                user = body["messages"][-1]["content"]
                text = owner.reply(user)
                if isinstance(text, tuple):  # (status, message): the endpoint refuses this request
                    self.send(text[0], {"error": {"message": text[1], "type": "invalid_request_error"}})
                    return
                with owner.lock:
                    owner.answered.append(hashlib.sha256(user.encode()).hexdigest())
                self.send(200, {"id": f"c{number}", "object": "chat.completion", "created": 0, "model": body["model"],
                                "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": text}}],
                                "usage": {"prompt_tokens": len(user), "completion_tokens": len(text),
                                          "total_tokens": len(user) + len(text)}})

            def send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        self._stopped = False

    def stop(self) -> None:
        with self.lock:
            if self._stopped:
                return
            self._stopped = True
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> TeacherServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
