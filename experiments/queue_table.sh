#!/usr/bin/env bash
# Queue the README's experiments table: every row with 3 training seeds, on the one cache `dvc repro` made,
# each stopping at `evaluate` (the downstream stages are judged separately). Then run the queue two at a
# time (training uses one thread each) and print the table from `dvc exp show`:
#
#   bash experiments/queue_table.sh && dvc queue start --jobs 2 && dvc queue status   # until all Success
#   python experiments/table.py
#
# Commit first: an experiment starts from the last commit.
set -euo pipefail
declare -A rows=(
  [default]=""
  [lambda0]="-S train.lambda_ot=0"
  [full-ot]="-S train.mass=1.0"
  [no-local]="-S train.local_contrastive_weight=0"
  [uniform-marginals]="-S train.patch_capacity=1.0"
  [paper-objective]="-S train.patch_capacity=1.0 -S train.local_contrastive_weight=0"
  [matching-only]="-S train.lambda_ot=0 -S train.local_contrastive_weight=0"
)
for row in "${!rows[@]}"; do
  for seed in 0 1 2; do
    # shellcheck disable=SC2086  # the overrides are separate words on purpose
    dvc exp run --queue evaluate -n "$row-s$seed" -S "train.seed=$seed" ${rows[$row]}
  done
done
