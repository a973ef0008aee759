"""raft: validated records -> RAFT records (golden document + distractors from the same split).

Outputs: data/raft/raft.jsonl, metrics/raft.json
"""

from koraft.cli import run_stage
from koraft.jsonl import write_json
from koraft.params import check_base, check_raft, check_split, load_params
from koraft.raft import write_raft

RECORDS = "data/validated/records.jsonl"
RAFT = "data/raft/raft.jsonl"
METRICS = "metrics/raft.json"


def main() -> None:
    params = load_params()
    seed = check_base(params)["seed"]
    raft, split = check_raft(params), check_split(params)
    metrics = write_raft(RECORDS, RAFT, raft, split, seed)
    write_json(METRICS, metrics)
    print(f"raft: {metrics['records']} records, {raft['distractor_source']} distractors, "
          f"golden document kept in {metrics['golden_included_share']:.1%}")


if __name__ == "__main__":
    run_stage("raft", main)
