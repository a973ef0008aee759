"""Generate stage throughput: documents read and chunked per second, teacher calls per second.

    python benchmarks/generate_throughput.py [--documents 200] [--calls 96] [--latency 0.05]

Chunking: Markdown files of synthetic Korean reading text (koraft.data.synth), read and cut at
Kiwi's sentences into 1000-character chunks. Teacher calls: the stage's OpenAI client against two
servers on 127.0.0.1, with 1, 4 and 16 requests in flight: the scripted teacher of the tests
(tests/teacher_server.py) answering after a fixed latency, which shows what concurrency buys
against a remote API, and llama.cpp's server running tiny-s from models/base (when `dvc repro base`
has built it), a real engine on this machine's cores.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from teacher_server import TeacherServer  # noqa: E402

from koraft.core.config import load_params  # noqa: E402
from koraft.generation.chunking import chunk_document  # noqa: E402
from koraft.generation.config import load_generate  # noqa: E402
from koraft.generation.documents import read_document  # noqa: E402
from koraft.generation.teachers import ask_teacher  # noqa: E402


def chunking_rate(folder: Path, count: int) -> None:
    from koraft.data.synth import synthetic_corpus

    texts = [document.text for document, _ in synthetic_corpus(num_docs=count * 4, seed=11)]
    for index in range(count):
        (folder / f"doc{index:04d}.md").write_text("\n\n".join(f"# 절 {k}\n{text}" for k, text in enumerate(
            texts[index * 4:index * 4 + 4])), encoding="utf-8")
    chunk_document(read_document(folder / "doc0000.md"), 1000, 150, len)  # Kiwi's model loads once, untimed
    started = time.perf_counter()
    chunks = characters = 0
    for path in sorted(folder.glob("*.md")):
        for chunk in chunk_document(read_document(path), 1000, 150, len):
            chunks, characters = chunks + 1, characters + len(chunk.text)
    seconds = time.perf_counter() - started
    print(f"chunking: {count} documents, {chunks} chunks, {characters / 1e6:.2f} M characters in {seconds:.2f} s: "
          f"{chunks / seconds:.0f} chunks/s, {count / seconds:.0f} documents/s")


def call_rate(label: str, url: str, model: str, calls: int, extra_body: dict | None = None,
              max_tokens: int = 64) -> None:
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    base = None
    for concurrency in (1, 4, 16):
        teacher = {**params["generate"]["teacher"], "base_url": url, "model": model, "concurrency": concurrency,
                   "extra_body": extra_body}
        settings = load_generate({**params, "generate": {**params["generate"], "teacher": teacher}})
        prompts = [(f"k{concurrency}-{i}", [{"role": "user", "content": f"다음 문서를 읽고 질문 3개를 만드세요.\n\n"
                                                                        f"문서:\n한결시는 {i}년에 세워졌다."}])
                   for i in range(calls)]
        started = time.perf_counter()
        answered = sum(1 for _ in ask_teacher(settings.teacher, {"temperature": 0.0, "max_tokens": max_tokens},
                                              prompts))
        rate = answered / (time.perf_counter() - started)
        base = base or rate
        print(f"{label}: concurrency {concurrency:2d}: {rate:7.1f} calls/s ({rate / base:.1f}x one at a time)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--calls", type=int, default=96)
    parser.add_argument("--latency", type=float, default=0.05, help="the scripted server's seconds per request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        chunking_rate(Path(folder), args.documents)
    with TeacherServer(latency_s=args.latency) as server:
        call_rate(f"scripted teacher, {args.latency * 1000:.0f} ms per request", server.url, "teacher", args.calls)
    tiny = ROOT / "models" / "base" / "tiny-s"
    if not tiny.is_dir():
        print("llama.cpp: models/base/tiny-s is missing (`dvc repro base`); skipped")
        return
    from koraft.serving.llama_cpp import convert, llama_server

    with tempfile.TemporaryDirectory() as folder:
        gguf = Path(folder) / "tiny-s-f32.gguf"
        convert(tiny, gguf, "f32")
        with llama_server(gguf, "teacher", 2048) as server:
            call_rate("llama.cpp serving tiny-s, 32 new tokens", server.url, "teacher", args.calls // 2,
                      {"repeat_penalty": 1.0}, max_tokens=32)


if __name__ == "__main__":
    main()
