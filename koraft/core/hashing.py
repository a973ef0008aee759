"""Content hashes of files and folders, read in blocks so that memory stays flat on large files."""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 20


def _update(digest, path: Path) -> None:
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    _update(digest, Path(path))
    return digest.hexdigest()


def folder_sha256(folder: Path) -> str:
    """Names and contents of every file below `folder`, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        _update(digest, path)
    return digest.hexdigest()
