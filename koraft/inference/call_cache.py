"""Every teacher reply, kept by the hash of what produced it, so no call is ever paid for twice.

The key is the SHA-256 of (backend, model, revision, the messages, the sampling settings): a rerun
with the same inputs calls nothing, a changed prompt calls only for the prompts it changed, and an
interrupted run resumes where it stopped, since each reply is appended and flushed the moment it
arrives. The file is an output of the generate stage that DVC keeps between runs (`persist`) and
versions like data, so a teammate's `dvc pull` brings the replies along with the records.

A line cut short by a kill is dropped on the next load; replies are never rewritten or reordered.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Reply:
    text: str
    tokens_in: int
    tokens_out: int
    finished: bool  # False: cut at the token limit
    refused: str | None = None  # a 4xx answer (the request itself is unacceptable): cached, never retried


def call_key(identity: dict[str, Any], messages: list[dict[str, str]], sampling: dict[str, Any]) -> str:
    payload = {"teacher": identity, "messages": messages, "sampling": sampling}
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


class CallCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.replies: dict[str, Reply] = {}
        self.torn_lines = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._load()
        self._handle = self.path.open("a", encoding="utf-8", newline="\n")

    def _load(self) -> None:
        good_end = 0
        with self.path.open("rb") as handle:
            for line in handle:
                try:
                    entry = json.loads(line) if line.endswith(b"\n") else None
                except json.JSONDecodeError:
                    entry = None
                if entry is None:
                    self.torn_lines += 1
                    break  # appends are sequential: only the last line can be torn
                key = entry.pop("key")
                self.replies[key] = Reply(**entry)
                good_end += len(line)
        if self.torn_lines:
            os.truncate(self.path, good_end)

    def get(self, key: str) -> Reply | None:
        return self.replies.get(key)

    def put(self, key: str, reply: Reply) -> None:
        self.replies[key] = reply
        self._handle.write(json.dumps({"key": key, **asdict(reply)}, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
