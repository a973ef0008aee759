"""Deterministic JSON/JSONL reading and writing for stage outputs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from koraft.core.errors import InputError


def jsonl_line(value: Any) -> str:
    """One compact JSON line (UTF-8, Hangul unescaped): the format of every JSONL koraft writes."""
    return json.dumps(value, ensure_ascii=False) + "\n"


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write one compact JSON object per line (UTF-8, Hangul unescaped); returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(jsonl_line(row))
            count += 1
    return count


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Read a stage output; these files are ours, so a bad line is an error, not a reject."""
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InputError(str(path), "file not found (run the previous stage: dvc repro)") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(str(path), f"invalid JSON: {exc.msg}", line=number) from None


def write_json(path: str | Path, value: Any) -> None:
    """Metrics files: pretty, key order as built, trailing newline."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
