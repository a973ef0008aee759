"""prefer: DPO, ORPO, KTO or SimPO (prefer.method) on the pairs, continuing the train stage's adapter.

Outputs: the preferred adapter folder (loaded by evaluate and export like the fine-tuned one), the metrics
file (the pairs per source, the method, steps, losses and how far the adapter moved) and its cost.
"""

import json

from koraft.core.cli import run_stage, stage_paths
from koraft.core.config import load_params
from koraft.core.jsonl import read_jsonl, write_json
from koraft.preference.config import load_prefer
from koraft.preference.prefer import PreferPaths, prefer

OPTIONS = ("train", "pairs", "adapter", "out", "scratch", "metrics", "cost")


def main() -> None:
    args = stage_paths("prefer", *OPTIONS)
    settings = load_prefer(load_params())  # a bad prefer.args key is one line, before any model loads
    records = {row["id"]: row for row in read_jsonl(args.train)}
    pairs = list(read_jsonl(args.pairs / "pairs.jsonl"))
    report = json.loads((args.pairs / "report.json").read_text(encoding="utf-8"))
    trained = prefer(pairs, records, settings, PreferPaths(sft_adapter=args.adapter, adapter=args.out,
                                                           scratch=args.scratch))
    write_json(args.cost, trained.pop("cost"))
    write_json(args.metrics, {"pairs": report, **trained})
    print(f"prefer: {trained['method']}, {trained['steps']} steps on {trained['rows']['rows']} rows, loss "
          f"{trained['loss']['first']} -> {trained['loss']['final']}; adapter: {trained['adapter_change']['changed']}"
          f"/{trained['adapter_change']['tensors']} tensors changed")


if __name__ == "__main__":
    run_stage("prefer", main)
