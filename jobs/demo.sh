#!/usr/bin/env bash
# The README's first command (`make demo`): simulate a week on the default config, then run
# the daily warm-start job (jobs/train_daily.py) on 2 CPU processes for each of the days
# after the first, as the nightly schedule would, and print the per-day, per-scenario
# table of hold-out metrics and drift. The first simulated day is the "yesterday" of the
# first run's watch-ratio drift.
# Usage: jobs/demo.sh PYTHON [WORKDIR] [DAYS]
set -euo pipefail
python=${1:?usage: demo.sh PYTHON [WORKDIR] [DAYS]}
workdir=${2:-demo}
days=${3:-5}
bin=$(dirname "$python")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export OMP_NUM_THREADS=1
"$bin/protorec" simulate --out "$workdir/data" --start 2026-01-01 --days "$((days + 1))" --quiet
for i in $(seq 1 "$days"); do
  day=$(date -u -d "2026-01-01 + $i day" +%F)
  status=0
  # a day with a run record is skipped by the job, which returns its recorded status
  done_before=0
  [ ! -f "$workdir/workdir/runs/$day.json" ] || done_before=1
  # the container entrypoint, run directly: the same mapping onto torchrun as in the images
  PROTOREC_WORKDIR="$workdir/workdir" PROTOREC_DATASET="$workdir/data" PROTOREC_DATE="$day" \
    PROTOREC_CONFIG=simulator PROTOREC_DEVICE=cpu PROTOREC_NPROC_PER_NODE=2 \
    TORCHRUN="$bin/torchrun" "$root/docker/entrypoint.sh" --quiet || status=$?
  case $done_before$status in
    00) echo "$day: published" ;;
    03) echo "$day: refused by the gate; yesterday's export stays current" ;;
    10) echo "$day: already done (published): nothing changed" ;;
    13) echo "$day: already done (refused by the gate): nothing changed" ;;
    *) echo "$day: failed with status $status" >&2; exit "$status" ;;
  esac
done
echo
"$bin/protorec" report --workdir "$workdir/workdir"
echo
echo "exports: $workdir/workdir/exports/, run records: $workdir/workdir/runs/"
