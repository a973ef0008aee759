"""The pipeline's stage scripts, run by dvc.yaml as `python -m stages.<name>` from the checkout DVC runs in.

Importing the package pins the CPU numerics before any stage imports torch (koraft.core.numerics), so
a stage gives the same bits on another machine of the same kind.
"""

from koraft.core.numerics import pin_environment

pin_environment()
