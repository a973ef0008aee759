"""base: build the tiny embedded-default models (random weights, our tokenizer) as HF model folders.

Outputs: models/base/tiny-s/, models/base/tiny-m/ (real presets are loaded from the hub or a local folder)
"""

from koraft.cli import run_stage
from koraft.tiny import TINY_SPECS, build_tiny_model

OUTPUT = "models/base/{}"


def main() -> None:
    for name in TINY_SPECS:
        build_tiny_model(name, OUTPUT.format(name))
        print(f"base: built {OUTPUT.format(name)}")


if __name__ == "__main__":
    run_stage("base", main)
