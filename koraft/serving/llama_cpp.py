"""llama.cpp through the llama-cpp-python package: its GGUF converter, its quantizer and its server.

Nothing here reimplements llama.cpp. The converter is llama.cpp's own `convert_hf_to_gguf.py` from
the source distribution the installed llama-cpp-python was built from (same llama.cpp commit as the
runtime that loads the file), the quantizer is `llama_model_quantize` from its C API, and the server
is `python -m llama_cpp.server`.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from koraft.core.errors import KoraftError

CHECKOUT_ENV = "KORAFT_LLAMA_CPP"  # a llama.cpp checkout to take the converter from instead
CACHE_ENV = "KORAFT_CACHE"  # where the converter is unpacked; default ~/.cache/koraft
PACKAGE = "llama-cpp-python"
# What the converter needs from llama.cpp's tree: the script, its model classes, its own gguf-py.
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
# The unquantized types are the converter's outtypes; the quantized ones llama.h's LLAMA_FTYPE_MOSTLY_*.
UNQUANTIZED = ("f32", "f16", "bf16")
QUANTIZED = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k")
BLOCK = {"q8_0": 32, "q4_0": 32, "q4_1": 32, "q5_0": 32, "q5_1": 32}  # weights per block; k-quants use 256


def block_size(kind: str) -> int:
    return BLOCK.get(kind, 256)


def installed_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        raise KoraftError(f"{PACKAGE} is not installed: `pip install -r requirements.txt` builds it "
                          f"(llama.cpp compiles from source: 4 to 7 minutes on 2 cores, measured)") from None


def converter() -> Path:
    """Path of convert_hf_to_gguf.py: from $KORAFT_LLAMA_CPP, or unpacked from llama-cpp-python's sdist."""
    checkout = os.environ.get(CHECKOUT_ENV)
    if checkout:
        script = Path(checkout) / "convert_hf_to_gguf.py"
        if not script.is_file():
            raise KoraftError(f"${CHECKOUT_ENV}={checkout}: no convert_hf_to_gguf.py there (a llama.cpp checkout)")
        return script
    version = installed_version()
    folder = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "koraft") / f"llama.cpp-{version}"
    script = folder / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        # The sdist pip built the installed package from: pip's cache has it, else the package index.
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               "--quiet", f"{PACKAGE}=={version}", "-d", scratch],
                              capture_output=True, text=True)
        archives = list(Path(scratch).glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no sdist"]
            raise KoraftError(f"cannot fetch the {PACKAGE}=={version} sdist for llama.cpp's converter ({tail[0]}); "
                              f"offline, set ${CHECKOUT_ENV} to a llama.cpp checkout")
        unpacked = Path(scratch) / "llama.cpp"
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                inside = member.name.split("/vendor/llama.cpp/", 1)
                if len(inside) == 2 and inside[1].startswith(CONVERTER_PARTS) and (member.isfile() or member.isdir()):
                    member.name = inside[1]
                    archive.extract(member, unpacked, filter="data")
        os.replace(unpacked, folder)  # whole or not at all: a half-unpacked converter is never reused
    return script


def convert(model_dir: Path, out_file: Path, outtype: str) -> None:
    """A Hugging Face folder to an unquantized GGUF with llama.cpp's converter."""
    if outtype not in UNQUANTIZED:
        raise KoraftError(f"GGUF outtype {outtype!r}: the converter writes {', '.join(UNQUANTIZED)}")
    done = subprocess.run([sys.executable, str(converter()), str(model_dir), "--outfile", str(out_file),
                           "--outtype", outtype], capture_output=True, text=True)
    if done.returncode != 0 or not out_file.is_file():
        errors = [line for line in done.stderr.splitlines() if "Error" in line or "error" in line]
        raise KoraftError(f"llama.cpp's converter failed on {model_dir}: "
                          f"{(errors or done.stderr.strip().splitlines() or ['no output'])[-1]}")


def quantize(source: Path, target: Path, kind: str, threads: int = 0) -> None:
    """GGUF `source` to quantized `target` with llama.cpp's own quantizer."""
    import llama_cpp

    if kind not in QUANTIZED:
        raise KoraftError(f"GGUF type {kind!r}: choose from {', '.join(QUANTIZED)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind.upper()}")
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0 or not target.is_file():
        raise KoraftError(f"llama.cpp could not quantize {source} to {kind} (status {status})")


@dataclass(frozen=True)
class Server:
    url: str  # the OpenAI-compatible base URL, ending in /v1
    model: str  # the model name requests use
    process: subprocess.Popen


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def check_gguf(gguf: Path) -> None:
    """llama.cpp's own loader on the file, vocabulary only (0.1 s; it checks every tensor lies within the file
    but reads no weight): a truncated or damaged GGUF is one line, not the server's traceback."""
    from llama_cpp import Llama

    with _stderr_to_devnull():  # the loader's C code prints to stderr whatever verbose says
        try:
            Llama(model_path=str(gguf), vocab_only=True, verbose=False)
        except ValueError:
            raise KoraftError(f"{gguf}: llama.cpp cannot load it: a truncated or damaged GGUF; export it again "
                              f"(dvc repro -f export)") from None


@contextmanager
def _stderr_to_devnull():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def server_command(gguf: Path, model: str, host: str, port: int, n_ctx: int, threads: int | None = None
                   ) -> list[str]:
    """llama-cpp-python's OpenAI-compatible server for one GGUF; its chat template comes from the file.

    `--logits_all False`: the server's default keeps every position's logits, which chat answers never
    read (measured here: 0.118 -> 0.113 s per sample on the tiny model).
    """
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", model,
               "--host", host, "--port", str(port), "--n_ctx", str(n_ctx), "--logits_all", "False"]
    return command + (["--n_threads", str(threads)] if threads else [])


def wait_until_ready(url: str, process: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            lines = log.read_text(errors="replace").strip().splitlines()
            raise KoraftError(f"llama.cpp's server exited ({process.returncode}): {(lines or ['no output'])[-1]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise KoraftError(f"llama.cpp's server did not answer {url}/models within {timeout_s:.0f} s (log: {log})")


@contextmanager
def llama_server(gguf: Path, model: str, n_ctx: int, host: str = "127.0.0.1", port: int = 0,
                 threads: int | None = None, ready_timeout_s: float = 120.0) -> Iterator[Server]:
    """Run llama.cpp's server on `gguf` for the duration of the block, on loopback by default."""
    if not gguf.is_file():
        raise KoraftError(f"{gguf}: no such GGUF file; run `dvc repro export` first")
    port = port or free_port(host)
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "server.log"
        with log.open("w") as output:
            process = subprocess.Popen(server_command(gguf, model, host, port, n_ctx, threads), stdout=output,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            url = f"http://{host}:{port}/v1"
            wait_until_ready(url, process, ready_timeout_s, log)
            yield Server(url=url, model=model, process=process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def has_server() -> bool:
    """Whether llama-cpp-python's server extra (fastapi, uvicorn, sse-starlette) is importable."""
    import importlib.util

    return all(importlib.util.find_spec(name) for name in ("llama_cpp", "fastapi", "uvicorn", "sse_starlette"))
