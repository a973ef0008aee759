"""raft: each split's validated records -> its RAFT rows (golden document + distractors from that split)."""

from koraft.core.cli import run_stage, stage_paths
from koraft.core.config import load_params
from koraft.core.errors import KoraftError
from koraft.core.jsonl import write_json
from koraft.data.config import load_raft
from koraft.data.outputs import written_whole
from koraft.data.quality import QualityReport
from koraft.data.raft import raft_metrics, write_raft
from koraft.data.split import SPLITS


def main() -> None:
    paths = stage_paths("raft", "splits", "out", "metrics")
    raft = load_raft(load_params())
    quality = QualityReport()
    with written_whole(*(paths.out / f"{name}.jsonl" for name in SPLITS)) as outputs:  # all three, or none
        splits = {name: write_raft(paths.splits / f"{name}.jsonl", output, raft, name, quality)
                  for name, output in zip(SPLITS, outputs, strict=True)}
        metrics = raft_metrics(splits, quality, raft)
        leaks = {kind: count for kind, count in metrics["quality"]["leakage"].items() if count}
        if leaks:  # impossible by construction unless a split file was edited by hand
            raise KoraftError(f"documents shared between splits {leaks}: rerun the split stage (dvc repro)")
    write_json(paths.metrics, metrics)
    print(f"raft: {metrics['records']} records, {raft.distractor_source} distractors, golden document kept in "
          f"{metrics['golden_included_share']:.1%}, leakage {metrics['quality']['leakage']}")


if __name__ == "__main__":
    run_stage("raft", main)
