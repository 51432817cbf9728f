#!/usr/bin/env bash
# The README's first command (`make demo`): simulate a week on the default config, then
# train MMoE on 2 CPU processes under torchrun and evaluate it on the last day, next to
# the simulator's oracle. The daily warm-start job (jobs/train_daily.py) will replace the
# training step once it exists.
# Usage: jobs/demo.sh PYTHON [WORKDIR]
set -euo pipefail
python=${1:?usage: demo.sh PYTHON [WORKDIR]}
workdir=${2:-demo}
bin=$(dirname "$python")
export OMP_NUM_THREADS=1
"$bin/protorec" simulate --out "$workdir/data" --start 2026-01-01 --days 5
"$bin/torchrun" --nproc_per_node=2 -m protorec.jobs.cli train --config simulator \
  --dataset "$workdir/data" --train 2026-01-01..2026-01-04 --test 2026-01-05 \
  --out "$workdir/metrics.json" --quiet
echo "metrics written to $workdir/metrics.json"
