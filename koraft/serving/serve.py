"""Serve a trained model on an existing engine behind an OpenAI-compatible API.

    python -m koraft.serving.serve llama.cpp [--gguf models/export/gguf/model-q8_0.gguf]
    python -m koraft.serving.serve vllm [--adapter models/train/adapter | --merged models/export/merged]

llama.cpp (llama-cpp-python's server) runs a GGUF from the export stage on the CPU; vLLM, on a GPU,
serves the base model with the LoRA adapter (`--enable-lora`) or the merged folder. The command
prints the URL and the model name requests use, then runs the server in the foreground. It binds
to 127.0.0.1 unless --host says otherwise, and takes no key: vLLM reads one from VLLM_API_KEY
itself; nothing here writes one anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from koraft.core.cli import run_stage
from koraft.core.errors import KoraftError
from koraft.models.manifest import manifest_model, read_manifest
from koraft.serving.llama_cpp import check_gguf, has_server, server_command

MODEL_NAME = "koraft"  # what requests name as `model`


def llama_cpp_command(gguf: Path, host: str, port: int, n_ctx: int) -> list[str]:
    if not gguf.is_file():
        raise KoraftError(f"{gguf}: no such GGUF; `dvc repro export` writes models/export/gguf/")
    check_gguf(gguf)
    if not has_server():
        raise KoraftError("llama-cpp-python's server is not installed: pip install -r requirements.txt")
    return server_command(gguf, MODEL_NAME, host, port, n_ctx)


def vllm_command(adapter: Path | None, merged: Path | None, host: str, port: int, max_model_len: int
                 ) -> list[str]:
    """`vllm serve` for the merged folder, or the adapter's base model with the adapter as a LoRA module."""
    if (adapter is None) == (merged is None):
        raise KoraftError("vllm: give --adapter (base + LoRA) or --merged (the export stage's merged folder)")
    folder = merged or adapter
    manifest = read_manifest(folder)  # a merged folder keeps the adapter's manifest
    resolved = manifest_model(manifest)
    common = ["--host", host, "--port", str(port), "--max-model-len", str(max_model_len)]
    if resolved.trust_remote_code:
        common.append("--trust-remote-code")
    if merged is not None:
        return ["vllm", "serve", str(merged), "--served-model-name", MODEL_NAME, *common]
    if manifest["method"] == "full":
        return ["vllm", "serve", str(adapter), "--served-model-name", MODEL_NAME, *common]
    rank = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))["r"]
    revision = ["--revision", resolved.revision] if resolved.revision else []
    return ["vllm", "serve", resolved.source, *revision, "--served-model-name", f"{MODEL_NAME}-base",
            "--enable-lora", "--lora-modules", f"{MODEL_NAME}={adapter}", "--max-lora-rank", str(rank), *common]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m koraft.serving.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("engine", choices=("llama.cpp", "vllm"))
    parser.add_argument("--gguf", type=Path, default=Path("models/export/gguf/model-q8_0.gguf"))
    parser.add_argument("--adapter", type=Path)
    parser.add_argument("--merged", type=Path)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 serves other machines too")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-length", type=int, default=4096, help="context length in tokens")
    parser.add_argument("--dry-run", action="store_true", help="print the engine's command instead of running it")
    args = parser.parse_args()
    if args.engine == "llama.cpp":
        command = llama_cpp_command(args.gguf, args.host, args.port, args.max_length)
    else:
        if args.adapter is None and args.merged is None:
            args.adapter = Path("models/train/adapter")
        command = vllm_command(args.adapter, args.merged, args.host, args.port, args.max_length)
        if not args.dry_run and shutil.which("vllm") is None:
            raise KoraftError("vllm is not installed here: on a GPU machine, pip install vllm")
    print(f"serve: {args.engine} at http://{args.host}:{args.port}/v1, model {MODEL_NAME!r}", flush=True)
    if args.dry_run:
        print(" ".join(command))
        return
    sys.stdout.flush()
    os.execvp(command[0], command)  # the engine replaces this process: a signal to it reaches the server


if __name__ == "__main__":
    run_stage("serve", main)
