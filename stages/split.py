"""split: validated records -> one file per split, by document (a hash bucket of its doc_id).

Records stream from --records to --out/{train,val,test}.jsonl; the report keeps ids, hashes and lengths only.
"""

from koraft.core.cli import run_stage, stage_paths
from koraft.core.config import load_params
from koraft.core.jsonl import write_json
from koraft.data.config import load_split
from koraft.data.split import SPLITS, write_splits


def main() -> None:
    paths = stage_paths("split", "records", "out", "metrics")
    split = load_split(load_params())
    report = write_splits(paths.records, {name: paths.out / f"{name}.jsonl" for name in SPLITS}, split)
    write_json(paths.metrics, report)
    print(f"split: records {report['records']}, documents {report['documents']}")


if __name__ == "__main__":
    run_stage("split", main)
