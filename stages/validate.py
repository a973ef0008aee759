"""validate: raw files (params validate.inputs) -> normalized records with doc ids, and rejects.

Outputs: data/validated/records.jsonl, data/validated/rejects.jsonl, metrics/validate.json
"""

from koraft.cli import run_stage
from koraft.jsonl import write_json
from koraft.params import check_validate, load_params
from koraft.validation import validate_to_files

RECORDS = "data/validated/records.jsonl"
REJECTS = "data/validated/rejects.jsonl"
METRICS = "metrics/validate.json"


def main() -> None:
    validate, specs = check_validate(load_params())
    m = validate_to_files(specs, validate["lengths"], validate["near_duplicates"], RECORDS, REJECTS)
    write_json(METRICS, m)
    print(f"validate: {m['raw']} raw records -> {m['kept']} kept, {m['rejected']} rejected "
          f"{m['rejected_by_reason']}; {m['documents']} documents")


if __name__ == "__main__":
    run_stage("validate", main)
