"""Merge a trained adapter into its base model and save a standalone model folder.

    python -m koraft.publish.merge --adapter models/train/adapter --output models/merged [--dtype bfloat16]

The base is always reloaded unquantized in 16-bit (or float32), even for a QLoRA adapter:
merging into 4-bit weights would round the adapter's update away and save a lossy model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from koraft.core.cli import run_stage
from koraft.core.errors import KoraftError
from koraft.core.jsonl import write_json
from koraft.models.loading import load_model
from koraft.models.manifest import MANIFEST, manifest_model, read_manifest
from koraft.models.presets import ensure_available

MERGE_DTYPES = ("bfloat16", "float16", "float32")


def merge_adapter(adapter: str | Path, output: str | Path, dtype: str = "bfloat16") -> Path:
    from peft import PeftModel
    from transformers import AutoTokenizer

    if dtype not in MERGE_DTYPES:
        raise KoraftError(f"--dtype: must be one of {', '.join(MERGE_DTYPES)}, got {dtype!r}")
    adapter, output = Path(adapter), Path(output)
    manifest = read_manifest(adapter)
    if manifest["method"] == "full":
        raise KoraftError(f"{adapter}: trained with method full, it already is a standalone model")
    resolved = manifest_model(manifest)
    ensure_available(resolved)
    base = load_model(resolved, quantization=None, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(output)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(output)  # with the pad token training used
    write_json(output / MANIFEST, {**manifest, "merged": {"adapter": str(adapter), "dtype": dtype}})
    return output


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m koraft.publish.merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default="models/train/adapter")
    parser.add_argument("--output", default="models/merged")
    parser.add_argument("--dtype", default="bfloat16", choices=MERGE_DTYPES)
    args = parser.parse_args()
    output = merge_adapter(args.adapter, args.output, args.dtype)
    print(f"merge: {args.adapter} + its base ({args.dtype}) -> {output}")


if __name__ == "__main__":
    run_stage("merge", main)
