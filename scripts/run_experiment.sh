#!/usr/bin/env bash
# Run one experiment and push it for everyone: what .github/workflows/gpu-experiment.yaml runs on its
# GPU runner, and what any worker machine can run by hand.
#   bash scripts/run_experiment.sh GIT_REMOTE -S model.preset=exaone-4.0-1.2b -S train.method=qlora ...
# The experiment's commit goes to GIT_REMOTE (refs/exps); its DVC outputs go to the default DVC
# remote when one is configured. Elsewhere: `dvc exp pull GIT_REMOTE NAME`, then `dvc exp show`.
set -euo pipefail
remote="$1"
shift
dvc exp run "$@"
if [ -n "$(dvc remote list)" ]; then
  dvc exp push "$remote" --rev HEAD
else
  dvc exp push --no-cache "$remote" --rev HEAD   # no DVC remote: share the metrics and params only
fi
