"""export: the fine-tuned model (export.variant: finetuned, or the prefer stage's preferred) as a merged folder,
GGUF files (llama.cpp) and an Ollama Modelfile.

Outputs: the export folder (merged/, gguf/) and its metrics (file sizes, quantizations skipped and why).
"""

from koraft.core.cli import run_stage, stage_paths
from koraft.core.config import load_params
from koraft.core.jsonl import write_json
from koraft.serving.export import export_model, load_export


def main() -> None:
    args = stage_paths("export", "adapter", "preferred", "out", "metrics")
    settings = load_export(load_params())
    adapter = args.preferred if settings.variant == "preferred" else args.adapter
    metrics = {"variant": settings.variant, **export_model(adapter, args.out, settings)}
    write_json(args.metrics, metrics)
    for values in metrics["gguf"].values():
        print(f"export: {args.out}/gguf/{values['file']}: {values['bytes'] / 2**20:.2f} MiB")
    for kind, reason in metrics["skipped"].items():
        print(f"export: {kind} skipped: {reason}")


if __name__ == "__main__":
    run_stage("export", main)
