"""Entry-point helpers for the stage scripts: paths from the command line, user errors as one line and exit code 1."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from koraft.core.errors import KoraftError


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's main: a KoraftError is its one line on stderr and exit code 1. The libraries' warnings
    (deprecations, hardware notes) are held until the stage ends: printed after a success, dropped on a failure,
    whose one line would otherwise come after a screen of them."""
    with warnings.catch_warnings(record=True) as held:
        try:
            main()
        except KoraftError as exc:
            print(f"{name}: error: {exc}", file=sys.stderr)
            sys.exit(1)
    for warning in held:
        print(warnings.formatwarning(warning.message, warning.category, warning.filename, warning.lineno,
                                     warning.line), file=sys.stderr, end="")


def stage_paths(name: str, *options: str) -> argparse.Namespace:
    """The stage's paths, given once as `--option path` arguments of its `cmd` in dvc.yaml."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}",
                                     description="Paths come from this stage's cmd in dvc.yaml.")
    for option in options:
        parser.add_argument(f"--{option.replace('_', '-')}", dest=option, type=Path, required=True)
    return parser.parse_args()
