"""split: RAFT records -> train/val/test by doc_id, with leakage checks and a quality report.

Outputs: data/split/{train,val,test}.jsonl, metrics/split.json
"""

from koraft.cli import run_stage
from koraft.errors import KoraftError
from koraft.jsonl import read_jsonl, write_json, write_jsonl
from koraft.params import check_split, load_params
from koraft.quality import quality_report, split_rows

RAFT = "data/raft/raft.jsonl"
OUTPUT = "data/split/{}.jsonl"
METRICS = "metrics/split.json"


def main() -> None:
    split = check_split(load_params())
    by_split = split_rows(list(read_jsonl(RAFT)), split, RAFT)
    report = quality_report(by_split)
    leaks = {kind: count for kind, count in report["leakage"].items() if count}
    if leaks:
        raise KoraftError(f"documents shared between splits {leaks}: the raft output is inconsistent")
    for name, rows in by_split.items():
        write_jsonl(OUTPUT.format(name), rows)
    write_json(METRICS, report)
    print(f"split: {report['records']} records, leakage {report['leakage']}")


if __name__ == "__main__":
    run_stage("split", main)
