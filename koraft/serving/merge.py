"""Merge a trained adapter into its base model and save a standalone model folder.

    python -m koraft.serving.merge --adapter models/train/adapter --output models/merged [--dtype bfloat16]

The base is always reloaded unquantized in 16-bit (or float32), even for a QLoRA adapter:
merging into 4-bit weights would round the adapter's update away and save a lossy model.
The folder carries the tokenizer with its chat template and a generation_config.json whose
eos ids are the family's end of turn, so vLLM, TGI and transformers stop where training did.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from koraft.core.cli import run_stage
from koraft.core.errors import KoraftError
from koraft.core.jsonl import write_json
from koraft.models.chat import stop_token_ids
from koraft.models.loading import load_model
from koraft.models.manifest import MANIFEST, manifest_model, read_manifest
from koraft.models.presets import ResolvedModel, ensure_available
from koraft.models.trained import load_trained_tokenizer

MERGE_DTYPES = ("bfloat16", "float16", "float32")
SENTENCEPIECE_MODEL = "tokenizer.model"


def merge_adapter(adapter: str | Path, output: str | Path, dtype: str = "bfloat16", allow_full: bool = False
                  ) -> Path:
    """The trained folder as one standalone model; `allow_full` re-saves a fully trained one as it is."""
    import dataclasses

    from peft import PeftModel

    if dtype not in MERGE_DTYPES:
        raise KoraftError(f"--dtype: must be one of {', '.join(MERGE_DTYPES)}, got {dtype!r}")
    adapter, output = Path(adapter), Path(output)
    manifest = read_manifest(adapter)
    resolved = manifest_model(manifest)
    if manifest["method"] == "full":
        if not allow_full:
            raise KoraftError(f"{adapter}: trained with method full, it already is a standalone model")
        merged = load_model(dataclasses.replace(resolved, source=str(adapter), revision=None), dtype=dtype)
    else:
        ensure_available(resolved)
        base = load_model(resolved, quantization=None, dtype=dtype)
        merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    tokenizer = load_trained_tokenizer(adapter, resolved)  # with the pad token and template training used
    merged.generation_config.eos_token_id = stop_token_ids(merged, tokenizer, resolved.family)
    merged.generation_config.pad_token_id = tokenizer.pad_token_id
    merged.save_pretrained(output)
    tokenizer.save_pretrained(output)
    copy_sentencepiece_model(resolved, output)
    list_added_tokens(output)
    write_json(output / MANIFEST, {**manifest, "merged": {"adapter": str(adapter), "dtype": dtype}})
    return output


def copy_sentencepiece_model(resolved: ResolvedModel, output: Path) -> None:
    """The base's tokenizer.model, where it has one (the tiny models, Gemma-2).

    transformers 5 saves only tokenizer.json. llama.cpp's converter reads SentencePiece's own model
    for the vocabulary's scores. Without the file it ranks pieces by id, and then it splits words
    differently from the model's tokenizer: measured, 111 of 318 test prompts got other ids."""
    source = Path(resolved.source)
    if source.is_dir():
        found = source / SENTENCEPIECE_MODEL
        found = found if found.is_file() else None
    else:  # a hub model: only what the local cache holds, never a download
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(resolved.source, SENTENCEPIECE_MODEL, revision=resolved.revision)
        found = Path(cached) if isinstance(cached, str) else None
    if found is not None:
        shutil.copyfile(found, output / SENTENCEPIECE_MODEL)


def list_added_tokens(output: Path) -> None:
    """tokenizer_config.json's added_tokens_decoder, from tokenizer.json, as transformers 4 wrote it.

    llama.cpp's converter learns there which added tokens are control tokens and which are user-defined
    (the tiny models' role tokens, Gemma's <start_of_turn>). Without it they are ordinary pieces that
    the SentencePiece merges never form, so llama.cpp spells <|user|> out in bytes."""
    config_path, tokenizer_path = output / "tokenizer_config.json", output / "tokenizer.json"
    if not tokenizer_path.is_file():
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if "added_tokens_decoder" in config:
        return
    added = json.loads(tokenizer_path.read_text(encoding="utf-8")).get("added_tokens", [])
    config["added_tokens_decoder"] = {str(token["id"]): {key: token[key] for key in (
        "content", "lstrip", "normalized", "rstrip", "single_word", "special")} for token in added}
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m koraft.serving.merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default="models/train/adapter")
    parser.add_argument("--output", default="models/merged")
    parser.add_argument("--dtype", default="bfloat16", choices=MERGE_DTYPES)
    args = parser.parse_args()
    output = merge_adapter(args.adapter, args.output, args.dtype)
    print(f"merge: {args.adapter} + its base ({args.dtype}) -> {output}")


if __name__ == "__main__":
    run_stage("merge", main)
