"""base: build the tiny embedded-default models (random weights, our tokenizer) as HF model folders under --out.

Real presets are loaded from the hub or a local folder; these two are what `dvc repro` runs on anywhere.
"""

from koraft.core.cli import run_stage, stage_paths
from koraft.models.tiny import TINY_SPECS, build_tiny_model


def main() -> None:
    paths = stage_paths("base", "out")
    for name in TINY_SPECS:
        build_tiny_model(name, paths.out / name)
        print(f"base: built {paths.out / name}")


if __name__ == "__main__":
    run_stage("base", main)
