"""The base models koraft builds itself (the base stage): which ones a run needs, and building them.

A preset without a hub id is built under `models/base/<preset>`: the tiny models from a config and a seed
(koraft.models.tiny), Gemma 3 270M from its package and its layer-cut student (koraft.models.packaged). The
stage builds only the groups that `model.preset` and `distill.student.preset` name (the tiny models; Gemma 3
270M with its student), so the default pipeline spends no time pretraining tiny models it does not use, and
`-S model.preset=tiny-m` builds them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from koraft.core.config import reject_unknown_keys, section
from koraft.models.packaged import (
    GEMMA_LAYERS,
    PRESET,
    STUDENT_PRESET,
    build_gemma,
    build_student,
    check_student_layers,
)
from koraft.models.presets import PRESETS
from koraft.models.pretrain import PretrainSpec
from koraft.models.tiny import TINY_SPECS, build_tiny_model, check_pretraining

STUDENT, STUDENT_SOURCE = STUDENT_PRESET, PRESET  # the student's layers are cut from its source
KEYS = {"pretraining", "student_layers"}


# Built together: a teacher and its students. Changing distill.student within a group then rebuilds the same
# bytes, so train and the teacher cache are not rerun (`dvc exp run -S distill.student.preset=...`).
GROUPS = (frozenset(TINY_SPECS), frozenset({STUDENT_SOURCE, STUDENT}))


@dataclass(frozen=True)
class BaseSettings:
    presets: tuple[str, ...]  # the local presets to build, each after its source
    pretraining: dict[str, PretrainSpec]  # per tiny preset
    student_layers: tuple[int, ...] | None  # the Gemma student's layers, when it is built


def load_base(params: dict[str, Any]) -> BaseSettings:
    """The base section, with the presets that `model.preset` and `distill.student.preset` make it build."""
    base = section(params, "base")
    reject_unknown_keys(base, KEYS, "base")
    specs = check_pretraining(base)
    names = local_presets(params)
    layers = tuple(check_student_layers(base.get("student_layers"), GEMMA_LAYERS)) if STUDENT in names else None
    return BaseSettings(tuple(names), specs, layers)


def local_presets(params: dict[str, Any]) -> list[str]:
    """The locally built presets the run names, with the rest of their group, each after its source."""
    named = {part.get("preset") for part in (section(params, "model"),
                                             section(section(params, "distill"), "student", "distill."))}
    wanted = set().union(*(group for group in GROUPS if group & named))
    order = [name for name in PRESETS if name in wanted]
    return sorted(order, key=lambda name: name == STUDENT)


def build_local_models(settings: BaseSettings, out: Path) -> list[str]:
    """Build every needed local preset into `out`, whole or not at all; returns their names."""
    scratch = out.with_name(out.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        for name in settings.presets:
            if name in TINY_SPECS:
                build_tiny_model(name, scratch / name, settings.pretraining[name])
            elif name == STUDENT:
                build_student(scratch / STUDENT_SOURCE, scratch / name, list(settings.student_layers))
            else:
                build_gemma(scratch / name)
            print(f"base: built {out / name}")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(scratch, out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return list(settings.presets)
