#!/usr/bin/env bash
# Container entrypoint: maps environment variables onto torchrun and the daily job's flags.
#
#   PROTOREC_WORKDIR          required: checkpoints, exports, run records (a mounted volume)
#   PROTOREC_CONFIG           config file or name in configs/ (default: simulator)
#   PROTOREC_DATE             day to train, YYYY-MM-DD (default: yesterday, UTC)
#   PROTOREC_DATASET          contract data set (default: the config's data.dataset)
#   PROTOREC_FORCE            1: retrain a date that is already done (default: 0)
#   PROTOREC_DEVICE           auto | cpu | cuda (default: auto)
#   PROTOREC_NNODES           nodes (default: 1)
#   PROTOREC_NPROC_PER_NODE   processes per node (default: one per visible GPU, else 1)
#   PROTOREC_NODE_RANK        this node's rank (default: 0)
#   PROTOREC_RDZV_ENDPOINT    host:port of the rendezvous, required when NNODES > 1
#   PROTOREC_RDZV_ID          rendezvous id shared by the nodes (default: protorec-DATE)
#   TORCHRUN                  the launcher (default: torchrun)
#
# Arguments are appended to the job's flags. `entrypoint.sh protorec ...` (or any other
# command) runs that command instead, e.g. `protorec ingest ...` in the same image.
# Exit status (docs/daily.md): the job's own (0 published, 3 refused by the gate, 4 no data,
# 5 locked, 6 bad data), 2 bad environment, 1 a failure.
set -euo pipefail

die() { echo "entrypoint: $*" >&2; exit 2; }

if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  exec "$@"
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
workdir=${PROTOREC_WORKDIR:-}
[ -n "$workdir" ] || die "PROTOREC_WORKDIR is not set (where checkpoints and exports go)"
config=${PROTOREC_CONFIG:-simulator}
day=${PROTOREC_DATE:-$(date -u -d yesterday +%F)}
[[ $day =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] || die "PROTOREC_DATE must be YYYY-MM-DD, got '$day'"
device=${PROTOREC_DEVICE:-auto}
nnodes=${PROTOREC_NNODES:-1}
node_rank=${PROTOREC_NODE_RANK:-0}
if [ -n "${PROTOREC_NPROC_PER_NODE:-}" ]; then
  nproc=$PROTOREC_NPROC_PER_NODE
elif [ "$device" != cpu ] && command -v nvidia-smi >/dev/null 2>&1; then
  nproc=$(nvidia-smi -L | grep -c '^GPU' || true)
  [ "$nproc" -ge 1 ] || nproc=1
else
  nproc=1
fi
for pair in "PROTOREC_NNODES=$nnodes" "PROTOREC_NPROC_PER_NODE=$nproc" \
            "PROTOREC_NODE_RANK=$node_rank"; do
  [[ ${pair#*=} =~ ^[0-9]+$ ]] || die "${pair%%=*} must be a whole number, got '${pair#*=}'"
done
if [ "$nnodes" -lt 1 ] || [ "$nproc" -lt 1 ]; then
  die "PROTOREC_NNODES and PROTOREC_NPROC_PER_NODE must be >= 1"
fi

launcher=(--nproc_per_node="$nproc")
if [ "$nnodes" -eq 1 ]; then
  launcher+=(--standalone)
else
  endpoint=${PROTOREC_RDZV_ENDPOINT:-}
  [ -n "$endpoint" ] || die "PROTOREC_RDZV_ENDPOINT (host:port) is required with PROTOREC_NNODES=$nnodes"
  launcher+=(--nnodes="$nnodes" --node_rank="$node_rank" --rdzv_backend=c10d
             --rdzv_endpoint="$endpoint" --rdzv_id="${PROTOREC_RDZV_ID:-protorec-$day}")
fi

job=(--config "$config" --date "$day" --workdir "$workdir" --device "$device")
[ -z "${PROTOREC_DATASET:-}" ] || job+=(--dataset "$PROTOREC_DATASET")
[ "${PROTOREC_FORCE:-0}" != 1 ] || job+=(--force)

# torchrun reports any worker's non-zero exit as 1: the job's documented status (0, 2-6)
# comes back through PROTOREC_STATUS_FILE, written by each node's local rank 0 (as for
# `protorec daily`); failing that, the gate's refusal (3) is read back from the day's run
# record, when this launch wrote it (or, without --force, when the date was refused
# before). Signals go on to torchrun, which stops the workers.
record="$workdir/runs/$day.json"
status_file=$(mktemp)
launched=$(date +%s)
PROTOREC_STATUS_FILE=$status_file \
  "${TORCHRUN:-torchrun}" "${launcher[@]}" "$root/jobs/train_daily.py" "${job[@]}" "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT
status=0
wait "$pid" || status=$?
if [ "$status" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then
  status=0
  wait "$pid" || status=$?
fi
reported=$(cat "$status_file")
rm -f "$status_file"
if [[ $reported =~ ^[0-9]+$ ]]; then
  status=$reported
elif [ "$status" -ne 0 ] && [ -f "$record" ] && grep -q '"exit_status": 3' "$record"; then
  if [ "${PROTOREC_FORCE:-0}" != 1 ] || [ "$(stat -c %Y "$record")" -ge "$launched" ]; then
    status=3
  fi
fi
exit "$status"
