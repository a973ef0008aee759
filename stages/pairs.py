"""pairs: preference pairs from the train split, for the prefer stage.

Outputs (data/prefer/): pairs.jsonl (id, source, chosen, rejected), policy_outputs.jsonl (the SFT model's
greedy output for each record of the on-policy sample) and report.json (per source: records looked at, kept,
skipped with reasons, equal, duplicate), and its cost (the on-policy answers' seconds, kept out of the data
so that a rerun gives the same bytes). Its own stage, like the teacher's cache before distill: a sweep over
prefer.method or prefer.args reuses the pairs, the on-policy answers included, without generating again.
"""

from koraft.core.cli import run_stage, stage_paths
from koraft.core.config import load_params
from koraft.core.jsonl import read_jsonl, write_json, write_jsonl
from koraft.preference.config import load_pairs
from koraft.preference.pairs import answer_sample, build_pairs

OPTIONS = ("train", "adapter", "out", "cost")


def main() -> None:
    args = stage_paths("pairs", *OPTIONS)
    settings = load_pairs(load_params())
    rows = list(read_jsonl(args.train))
    outputs, generation, seconds = {}, None, 0.0
    if "on_policy" in settings.sources:
        outputs, generation, seconds = answer_sample(rows, settings, args.adapter)
    built = build_pairs(rows, settings, outputs)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "pairs.jsonl", built.pairs)
    write_jsonl(args.out / "policy_outputs.jsonl", [{"id": key, "output": text} for key, text in outputs.items()])
    report = {**built.report(), "on_policy_generation": generation}
    write_json(args.out / "report.json", report)
    write_json(args.cost, {"on_policy_generation_s": round(seconds, 2)})
    for source, counts in report["sources"].items():
        print(f"pairs: {source}: {counts['kept']} kept of {counts['records']} records ({counts['skipped']} skipped, "
              f"{counts['equal']} equal, {counts['duplicate']} duplicate)")
    print(f"pairs: {report['pairs']} pairs from {report['records']} records")


if __name__ == "__main__":
    run_stage("pairs", main)
