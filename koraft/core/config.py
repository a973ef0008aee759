"""Load params.yaml and check each stage's section before any work is done.

Each check returns the section unchanged when it is valid and raises ParamError naming the
dotted key otherwise, so a typo costs one line of output instead of a deep traceback.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from koraft.core.errors import KoraftError, ParamError

# The top-level keys: the seed and one section per stage (or group of stages).
SECTIONS = ("seed", "model", "generate", "validate", "split", "raft", "base", "train", "prefer", "distill", "export",
            "eval", "benchmark")


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            params = yaml.safe_load(handle)
    except FileNotFoundError:
        raise KoraftError(f"{path}: file not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise KoraftError(f"{path}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(params, dict):
        raise KoraftError(f"{path}: expected a mapping of sections")
    unknown = sorted(set(params) - set(SECTIONS), key=str)
    if unknown:
        raise KoraftError(f"{path}: unknown top-level keys {unknown}{_closest(unknown, SECTIONS)}")
    return params


def section(params: dict[str, Any], name: str, prefix: str = "") -> dict[str, Any]:
    """params[name] as a mapping; `prefix` is the dotted path of `params` itself, for the error."""
    value = params.get(name)
    if not isinstance(value, dict):
        raise ParamError(f"{prefix}{name}", "section is missing or not a mapping")
    return value


def reject_unknown_keys(mapping: dict[str, Any], allowed: set[str], key: str, hint: str = "") -> None:
    """ParamError naming `key` when `mapping` has keys outside `allowed`, with the closest known one: a
    misspelled key would otherwise be a setting silently not applied."""
    unknown = sorted(set(mapping) - allowed, key=str)
    if unknown:
        raise ParamError(key, f"unknown keys {unknown}{_closest(unknown, allowed)}" + (f"; {hint}" if hint else ""))


def _closest(unknown: list, known) -> str:
    """' (did you mean ...?)' for the unknown keys near a known one, else the known keys themselves."""
    known = sorted(str(k) for k in known)
    guesses = [f"{name!r} -> {match[0]!r}" for name in unknown
               if (match := difflib.get_close_matches(str(name), known, n=1, cutoff=0.6))]
    return f" (did you mean {', '.join(guesses)}?)" if guesses else f" (known keys: {', '.join(known)})"


def check_number(params: dict, key: str, prefix: str, low: float, high: float, integer: bool = False) -> float:
    value = params.get(key)
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        hint = " (write floats like 2.0e-4: YAML reads 2e-4 as a string)" if isinstance(value, str) else ""
        raise ParamError(f"{prefix}.{key}" if prefix else key, f"must be {kind}, got {value!r}{hint}")
    if not (low <= value <= high) or (isinstance(value, float) and math.isnan(value)):
        raise ParamError(f"{prefix}.{key}" if prefix else key, f"must be in [{low}, {high}], got {value!r}")
    return value


def check_choice(params: dict, key: str, prefix: str, choices: tuple[str, ...]) -> str:
    value = params.get(key)
    if value not in choices:
        raise ParamError(f"{prefix}.{key}", f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_text(params: dict, key: str, prefix: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ParamError(f"{prefix}.{key}", f"must be a non-empty string, got {value!r}")
    return value




def check_inside(path: str | Path, folders: list[Path], key: str) -> Path:
    """`path` as given, when it lies under one of the stage's declared dependency folders.

    DVC hashes only what a stage declares; a file read from elsewhere would change without rerunning it.
    """
    resolved = Path(path).resolve()
    if not any(resolved.is_relative_to(folder.resolve()) for folder in folders):
        where = ", ".join(f"{folder}/" for folder in folders)
        raise ParamError(key, f"{path} is outside {where}, which dvc.yaml tracks for this stage: move the file there")
    return Path(path)


def check_seed(params: dict[str, Any]) -> int:
    """The top-level seed: every random draw of every stage (raft, train, distill, bootstrap) starts from it."""
    return check_number(params, "seed", "", 0, 2**32 - 1, integer=True)


def check_fields(values: dict[str, Any], config_class: type, key: str) -> None:
    """Each value's type against the library config class's annotation (SFTConfig, LoraConfig, ...).

    The libraries store what they are given and fail deep inside training, naming no key: a YAML
    `2e-4` is a string, `"16"` is not an int. Fields of other types (enums, mappings) are left to the class.
    """
    hints = typing.get_type_hints(config_class)
    for name, value in values.items():
        allowed = _simple_types(hints.get(name))
        if not allowed or value is None and type(None) in allowed:
            continue
        fits = any(isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool) for kind in allowed)
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            fits = True
        if not fits:
            names = " or ".join(sorted({_TYPE_NAMES[kind] for kind in allowed}))
            numeric = isinstance(value, str) and allowed & {int, float}
            hint = " (write floats like 2.0e-4: YAML reads 2e-4 as a string)" if numeric else ""
            raise ParamError(f"{key}.{name}", f"must be {names}, got {value!r}{hint}")


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def _simple_types(annotation: Any) -> set[type]:
    """The plain types an annotation admits; empty when any part is not plain (enums, lists, mappings)."""
    parts = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (
        annotation,)
    kinds = {part for part in parts if part in _TYPE_NAMES}
    return kinds if len(kinds) == len(parts) else set()
