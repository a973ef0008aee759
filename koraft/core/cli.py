"""Entry-point helpers for the stage scripts: paths from the command line, user errors as one line and exit code 1."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from koraft.core.errors import KoraftError


def run_stage(name: str, main: Callable[[], None]) -> None:
    try:
        main()
    except KoraftError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(1)


def stage_paths(name: str, *options: str) -> argparse.Namespace:
    """The stage's paths, given once as `--option path` arguments of its `cmd` in dvc.yaml."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}",
                                     description="Paths come from this stage's cmd in dvc.yaml.")
    for option in options:
        parser.add_argument(f"--{option.replace('_', '-')}", dest=option, type=Path, required=True)
    return parser.parse_args()
