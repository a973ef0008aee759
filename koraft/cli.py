"""Entry-point helper for the stage scripts: user errors become one line and exit code 1."""

from __future__ import annotations

import sys
from collections.abc import Callable

from koraft.errors import KoraftError


def run_stage(name: str, main: Callable[[], None]) -> None:
    try:
        main()
    except KoraftError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(1)
