"""validate: raw files (params validate.inputs, under --raw) -> normalized records with doc ids, and rejects.

The generate stage's records (--generated) are one more input when it wrote any.
"""

from koraft.core.cli import run_stage, stage_paths
from koraft.core.config import check_inside, load_params
from koraft.core.jsonl import write_json
from koraft.data.config import load_validate
from koraft.data.readers import HUB_PREFIX, InputSpec
from koraft.data.validate import validate_to_files


def main() -> None:
    paths = stage_paths("validate", "raw", "generated", "records", "rejects", "metrics")
    settings = load_validate(load_params())
    specs = list(settings.inputs)
    for i, spec in enumerate(specs):
        if not spec.path.startswith(HUB_PREFIX):  # a hub dataset is pinned by its revision instead
            check_inside(spec.path, [paths.raw], f"validate.inputs[{i}].path")
    if paths.generated.is_file() and paths.generated.stat().st_size:
        specs = [*specs, InputSpec(str(paths.generated), "jsonl")]
    m = validate_to_files(specs, settings.lengths, settings.near_duplicates, paths.records, paths.rejects,
                          settings.unverified_quotes, refuse_empty=True)
    write_json(paths.metrics, m)
    print(f"validate: {m['raw']} raw records -> {m['kept']} kept, {m['rejected']} rejected "
          f"{m['rejected_by_reason']}; {m['documents']} documents; quotes {m['quotes']}")


if __name__ == "__main__":
    run_stage("validate", main)
