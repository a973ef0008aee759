"""generate: the team's documents (params generate.inputs, under --documents) -> RAFT records for validate.

A teacher LLM writes questions about each chunk and chains of thought that quote it; every reply is
cached (--calls, kept by DVC between runs), so a rerun pays for nothing it has asked before. With
generate.inputs empty the stage writes empty files and calls nothing.
"""

from koraft.core.cli import run_stage, stage_paths
from koraft.core.config import check_inside, load_params
from koraft.core.jsonl import write_json
from koraft.generation.config import load_generate
from koraft.generation.generate import generate_to_files


def main() -> None:
    paths = stage_paths("generate", "documents", "records", "rejects", "calls", "metrics", "cost")
    settings = load_generate(load_params())
    for i, path in enumerate(settings.inputs):
        check_inside(path, [paths.documents], f"generate.inputs[{i}]")
    metrics, cost = generate_to_files(settings, paths.records, paths.rejects, paths.calls)
    write_json(paths.metrics, metrics)
    write_json(paths.cost, cost)
    items, files = metrics["items"], metrics["files"]
    print(f"generate: {files['read']} of {files['found']} files read {files['rejected_by_reason']}, "
          f"{metrics['chunks']['count']} chunks, {items['requested']} items -> {items['kept']} kept, "
          f"{items['rejected']} rejected {items['rejected_by_reason']}; teacher calls: {cost['teacher_calls_made']} "
          f"made, {cost['cache_hits']} from the cache")


if __name__ == "__main__":
    run_stage("generate", main)
