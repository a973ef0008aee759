"""Read a predictions file: any system's answers to the test split, scored without loading a model.

One JSON object per line with the test record's `id` and the system's `prediction` (its raw
output: a chain of thought ending in `<ANSWER>: ` is handled like a generated one). Every test
record must be answered exactly once; anything else is an error naming the file, line and field.
"""

from __future__ import annotations

import json
from pathlib import Path

from koraft.core.errors import InputError, KoraftError


def read_predictions(path: Path, test_ids: list[str]) -> dict[str, str]:
    """id -> prediction for every test id."""
    known, predictions = set(test_ids), {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise KoraftError(f"params.yaml: eval.predictions_file: {path} not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(str(path), f"invalid JSON: {exc.msg}", line=number) from None
        if not isinstance(row, dict):
            raise InputError(str(path), "expected a JSON object with id and prediction", line=number)
        for field in ("id", "prediction"):
            if not isinstance(row.get(field), str):
                raise InputError(str(path), f"must be a string, got {row.get(field)!r}", line=number, field=field)
        if row["id"] not in known:
            raise InputError(str(path), f"{row['id']!r} is not a record of the test split", line=number, field="id")
        if row["id"] in predictions:
            raise InputError(str(path), f"{row['id']!r} is answered twice", line=number, field="id")
        predictions[row["id"]] = row["prediction"]
    missing = [record_id for record_id in test_ids if record_id not in predictions]
    if missing:
        raise InputError(str(path), f"{len(missing)} of {len(test_ids)} test records have no prediction "
                                    f"(first: {', '.join(missing[:3])})")
    return predictions
