"""base: build the base models koraft makes itself, those the run names, as HF folders under --out.

Gemma 3 270M (the default) from its package, its layer-cut distillation student, and the tiny models
(pretrained here on synthetic text, schedules from params `base.pretraining`). Hub presets are loaded
from the hub or a local folder by the stages that use them.
"""

from koraft.core.cli import run_stage, stage_paths
from koraft.core.config import load_params
from koraft.models.local import build_local_models, load_base


def main() -> None:
    paths = stage_paths("base", "out")
    build_local_models(load_base(load_params()), paths.out)


if __name__ == "__main__":
    run_stage("base", main)
