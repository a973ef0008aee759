"""Stage outputs that appear whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_whole(*paths: str | Path) -> Iterator[list[Path]]:
    """Temporary paths beside `paths` to write to; renamed onto them only when the block succeeds.

    A stage that fails half way (a truncated input file, an interrupt) leaves none of its new
    outputs behind: the temporary files are removed and any earlier output stays as it was.
    """
    finals = [Path(path) for path in paths]
    temporary = [final.with_name(f".{final.name}.partial") for final in finals]
    for path in finals:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temporary
    except BaseException:
        for path in temporary:
            path.unlink(missing_ok=True)
        raise
    for path, final in zip(temporary, finals, strict=True):
        os.replace(path, final)
