"""base: build and pretrain the tiny embedded-default models (our tokenizer and weights) as HF folders under --out.

Real presets are loaded from the hub or a local folder; these two are what `dvc repro` runs on anywhere.
Their pretraining schedules come from params `base.pretraining` (koraft/models/pretrain.py).
"""

from koraft.core.cli import run_stage, stage_paths
from koraft.core.config import load_params, section
from koraft.models.tiny import build_tiny_model, check_pretraining


def main() -> None:
    paths = stage_paths("base", "out")
    specs = check_pretraining(section(load_params(), "base"))
    for name, spec in specs.items():
        build_tiny_model(name, paths.out / name, spec)
        print(f"base: built {paths.out / name}")


if __name__ == "__main__":
    run_stage("base", main)
