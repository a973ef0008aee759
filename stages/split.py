"""split: RAFT records -> train/val/test by doc_id, with leakage checks and a quality report.

Outputs: data/split/{train,val,test}.jsonl, metrics/split.json. Rows stream from the raft output
to the three files; the report keeps ids, hashes and lengths only.
"""

from pathlib import Path

from koraft.cli import run_stage
from koraft.errors import KoraftError
from koraft.jsonl import jsonl_line, read_jsonl, write_json
from koraft.params import SPLITS, check_split, load_params
from koraft.quality import QualityReport, split_of_row

RAFT = "data/raft/raft.jsonl"
OUTPUT = "data/split/{}.jsonl"
METRICS = "metrics/split.json"


def main() -> None:
    split = check_split(load_params())
    quality = QualityReport()
    paths = {name: Path(OUTPUT.format(name)) for name in SPLITS}
    paths["train"].parent.mkdir(parents=True, exist_ok=True)
    outputs = {name: open(path, "w", encoding="utf-8", newline="\n") for name, path in paths.items()}
    try:
        for number, row in enumerate(read_jsonl(RAFT), start=1):
            name = split_of_row(row, number, split, RAFT)
            outputs[name].write(jsonl_line(row))
            quality.add(row, name)
    finally:
        for handle in outputs.values():
            handle.close()
    report = quality.report()
    leaks = {kind: count for kind, count in report["leakage"].items() if count}
    if leaks:
        for path in paths.values():
            path.unlink()
        raise KoraftError(f"documents shared between splits {leaks}: the raft output is inconsistent")
    write_json(METRICS, report)
    print(f"split: {sum(report['records'].values())} records, leakage {report['leakage']}")


if __name__ == "__main__":
    run_stage("split", main)
