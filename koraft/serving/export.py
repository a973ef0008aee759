"""Export the fine-tuned (or preferred) model for serving engines: a merged folder, GGUF files and an Ollama
Modelfile.

    <out>/merged/            standalone model (vLLM, TGI, transformers): tokenizer, chat template,
                             generation_config.json stopping at the family's end of turn
    <out>/gguf/model-<type>.gguf   llama.cpp's converter (unquantized) and quantizer (each type)
    <out>/gguf/Modelfile     Ollama: FROM one of the GGUFs, the template, stop token, system prompt

The merged folder is built from the unquantized base even for a QLoRA adapter (koraft.serving.merge).
Everything is written to a scratch folder beside `out` and moved into place at the end, so a failed
export leaves no half-written output.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from koraft.core.config import check_number, reject_unknown_keys, section
from koraft.core.errors import KoraftError, ParamError
from koraft.core.jsonl import write_json
from koraft.core.measure import directory_bytes
from koraft.serving import llama_cpp
from koraft.serving.merge import MERGE_DTYPES, merge_adapter
from koraft.serving.ollama import modelfile

KEYS = {"variant", "dtype", "gguf", "ollama"}
VARIANTS = ("finetuned", "preferred")  # the train stage's adapter, or the prefer stage's


@dataclass(frozen=True)
class ExportSettings:
    variant: str  # which adapter is exported: finetuned or preferred
    dtype: str  # the merged folder's: auto (the model's own) or one of MERGE_DTYPES
    outtype: str  # the unquantized GGUF's type
    quantizations: tuple[str, ...]  # llama.cpp types quantized from it
    ollama_gguf: str  # the GGUF type the Modelfile uses
    num_ctx: int  # train.args.max_length: the served context is what every prompt was fitted to


def load_export(params: dict[str, Any]) -> ExportSettings:
    settings = section(params, "export")
    reject_unknown_keys(settings, KEYS, "export")
    variant = settings.get("variant", "finetuned")
    if variant not in VARIANTS:
        raise ParamError("export.variant", f"must be one of {', '.join(VARIANTS)}, got {variant!r}")
    dtype = settings.get("dtype", "auto")
    if dtype != "auto" and dtype not in MERGE_DTYPES:
        raise ParamError("export.dtype", f"must be auto (the model's own) or one of {', '.join(MERGE_DTYPES)}")
    gguf = section(settings, "gguf", "export.")
    reject_unknown_keys(gguf, {"outtype", "quantizations"}, "export.gguf")
    if gguf.get("outtype") not in llama_cpp.UNQUANTIZED:
        raise ParamError("export.gguf.outtype", f"must be one of {', '.join(llama_cpp.UNQUANTIZED)}, "
                                                f"got {gguf.get('outtype')!r}")
    kinds = gguf.get("quantizations") or []
    unknown = [kind for kind in kinds if kind not in llama_cpp.QUANTIZED] if isinstance(kinds, list) else [kinds]
    if unknown or len(set(kinds)) != len(kinds):
        raise ParamError("export.gguf.quantizations", f"a list of distinct llama.cpp types "
                                                      f"({', '.join(llama_cpp.QUANTIZED)}), got {kinds!r}")
    ollama = section(settings, "ollama", "export.")
    reject_unknown_keys(ollama, {"gguf"}, "export.ollama")
    if ollama.get("gguf") not in (gguf["outtype"], *kinds):
        raise ParamError("export.ollama.gguf", f"names the GGUF the Modelfile uses: {gguf['outtype']} or one of "
                                               f"export.gguf.quantizations, got {ollama.get('gguf')!r}")
    # The served context is the training length: what every prompt was fitted to.
    train_args = section(section(params, "train"), "args", "train.")
    num_ctx = check_number(train_args, "max_length", "train.args", 8, 10**6, integer=True)
    return ExportSettings(variant=variant, dtype=dtype, outtype=gguf["outtype"], quantizations=tuple(kinds),
                          ollama_gguf=ollama["gguf"], num_ctx=num_ctx)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def gguf_name(kind: str) -> str:
    return f"model-{kind}.gguf"


def unquantizable(config: dict[str, Any], kind: str) -> str | None:
    """Why llama.cpp cannot quantize every weight of this architecture to `kind`, or None."""
    block = llama_cpp.block_size(kind)
    widths = {name: config[name] for name in ("hidden_size", "intermediate_size") if name in config}
    odd = [f"{name} {width}" for name, width in widths.items() if width % block]
    if odd:
        return (f"{', '.join(odd)} not a multiple of {block}: llama.cpp would quietly store those weights "
                f"in another type")
    return None


def export_model(adapter: Path, out: Path, settings: ExportSettings) -> dict[str, Any]:
    """Write every export of the trained folder `adapter` under `out`; returns the stage metrics."""
    from koraft.models.chat import end_of_turn
    from koraft.models.manifest import manifest_model, read_manifest
    from koraft.models.trained import load_trained_tokenizer

    manifest = read_manifest(adapter)
    resolved = manifest_model(manifest)
    scratch = out.with_name(out.name + ".partial")
    _remove(scratch)
    try:
        dtype = resolved.dtype if settings.dtype == "auto" else settings.dtype
        merged = merge_adapter(adapter, scratch / "merged", dtype, allow_full=True)
        config = json.loads((merged / "config.json").read_text(encoding="utf-8"))
        tokenizer = load_trained_tokenizer(adapter, resolved)

        gguf = scratch / "gguf"
        gguf.mkdir()
        files = {settings.outtype: gguf / gguf_name(settings.outtype)}
        llama_cpp.convert(merged, files[settings.outtype], settings.outtype)
        skipped = {}
        for kind in settings.quantizations:
            reason = unquantizable(config, kind)
            if reason:
                skipped[kind] = reason
                continue
            files[kind] = gguf / gguf_name(kind)
            llama_cpp.quantize(files[settings.outtype], files[kind], kind)
        if settings.ollama_gguf not in files:
            kind = settings.ollama_gguf
            raise KoraftError(f"export.ollama.gguf: {kind} was skipped: {skipped[kind]}")
        stop = end_of_turn(tokenizer, resolved.family)
        stops = sorted({stop, tokenizer.eos_token} - {None})
        text = modelfile(gguf_name(settings.ollama_gguf), resolved.family.name, manifest["system_prompt"], stops,
                         settings.num_ctx)
        (gguf / "Modelfile").write_text(text, encoding="utf-8")
        write_json(scratch / "export.json", {"adapter": str(adapter), "family": resolved.family.name,
                                              "files": {kind: path.name for kind, path in files.items()}})
        _remove(out)
        os.replace(scratch, out)
    except BaseException:
        _remove(scratch)  # a failed export leaves nothing behind
        raise
    return {
        "model": {"source": resolved.source, "family": resolved.family.name, "method": manifest["method"]},
        "merged": {"dtype": dtype, "bytes": directory_bytes(out / "merged")},
        "gguf": {kind: {"file": gguf_name(kind), "bytes": (out / "gguf" / gguf_name(kind)).stat().st_size,
                        "unquantized": kind == settings.outtype} for kind in files},
        "skipped": skipped,
        "ollama": {"gguf": gguf_name(settings.ollama_gguf), "stop": stops},
        "llama_cpp_python": llama_cpp.installed_version(),
    }
