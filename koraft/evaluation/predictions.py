"""Read a predictions file: any system's answers to the test split, scored without loading a model.

One JSON object per line with the test record's `id` and the system's `prediction` (its raw
output: a chain of thought ending in `<ANSWER>: ` is handled like a generated one). Every test
record must be answered exactly once; anything else is an error naming the file, line and field.
"""

from __future__ import annotations

import json
from pathlib import Path

from koraft.core.errors import InputError, KoraftError

MAX_PROBLEMS = 20  # reported at once, so one pass over a bad file shows what to fix


def read_predictions(path: Path, test_ids: list[str]) -> dict[str, str]:
    """id -> prediction for every test id; every bad line (the first MAX_PROBLEMS of them) in one error."""
    known, predictions = set(test_ids), {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise KoraftError(f"params.yaml: eval.predictions_file: {path} not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    problems: list[InputError] = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            problem = _take_line(path, number, line, known, predictions)
            if problem:
                problems.append(problem)
    missing = [record_id for record_id in test_ids if record_id not in predictions]
    if missing and not problems:
        raise InputError(str(path), f"{len(missing)} of {len(test_ids)} test records have no prediction "
                                    f"(first: {', '.join(missing[:3])})")
    if problems:
        shown = "\n".join(f"  {problem}" for problem in problems[:MAX_PROBLEMS])
        more = f"\n  ... and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
        unanswered = f"; {len(missing)} test records have no prediction" if missing else ""
        raise KoraftError(f"{path}: {len(problems)} bad lines{unanswered}:\n{shown}{more}")
    return predictions


def _take_line(path: Path, number: int, line: str, known: set[str], predictions: dict[str, str]) -> InputError | None:
    """Add one line's prediction, or return what is wrong with it."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return InputError(str(path), f"invalid JSON: {exc.msg}", line=number)
    if not isinstance(row, dict):
        return InputError(str(path), "expected a JSON object with id and prediction", line=number)
    for field in ("id", "prediction"):
        if not isinstance(row.get(field), str):
            return InputError(str(path), f"must be a string, got {row.get(field)!r}", line=number, field=field)
    if row["id"] not in known:
        return InputError(str(path), f"{row['id']!r} is not a record of the test split", line=number, field="id")
    if row["id"] in predictions:
        return InputError(str(path), f"{row['id']!r} is answered twice", line=number, field="id")
    predictions[row["id"]] = row["prediction"]
    return None
