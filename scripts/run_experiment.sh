#!/usr/bin/env bash
# Run one experiment on this machine and push it for everyone: what .github/workflows/gpu-experiment.yaml
# runs on its GPU runner, and what any worker clone can run by hand (`python scripts/sweep.py NAME
# --workers GIT_REMOTE` prints one such line per experiment of a sweep).
#   bash scripts/run_experiment.sh GIT_REMOTE -S model.preset=exaone-4.0-1.2b -S train.method=qlora ...
# With a DVC remote configured, outputs that are already there (the data stages, the base models) are
# pulled rather than recomputed (`--pull`), and the experiment's outputs go there with its commit
# (refs/exps on GIT_REMOTE). Elsewhere: `dvc exp pull GIT_REMOTE`, then `dvc exp show`.
set -euo pipefail
remote="$1"
shift
if [ -n "$(dvc remote list)" ]; then
  dvc exp run --pull "$@"
  dvc exp push "$remote" --rev HEAD
else
  dvc exp run "$@"
  dvc exp push --no-cache "$remote" --rev HEAD   # no DVC remote: share the metrics and params only
fi
