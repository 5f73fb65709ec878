#!/usr/bin/env bash
# xAPI statements/s into suivi (durable: each batch is in the fsynced journal before its 200)
# and, in the same run, the same statements into Ralph (PyPI ralph-malph), FUN-MOOC's LRS, with
# its local file-system backend. Both get exactly the same requests: `suivi simulate --xapi` at
# one seed and scale, BATCH statements a POST, clicks left out (Ralph is no click tracker), the
# token sent as HTTP Basic's password. ROUNDS rounds, alternating, so both see the same noisy
# machine; prints each run and the medians' ratio. BENCHMARKS.md has the figures.
#
# Ralph's file-system LRS backend creates its file on the first write and refuses every later
# one ("already exists"): it is written for one-shot imports. It supports appending, so the
# launcher below sets its default write mode to APPEND; nothing else of Ralph is changed.
#
#   cargo build --release && benches/xapi.sh [ROUNDS] [SCALE] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SCALE=${2:-0.03}
BATCH=${3:-500}
SUIVI=${SUIVI:-./target/release/suivi}
RALPH_VENV=${RALPH_VENV:-target/ralph-venv}
[ -x "$SUIVI" ] || { echo "build first: cargo build --release (or set SUIVI)" >&2; exit 1; }
if [ ! -x "$RALPH_VENV/bin/ralph" ]; then
  echo "installing Ralph into $RALPH_VENV" >&2
  python3 -m venv "$RALPH_VENV"
  "$RALPH_VENV/bin/pip" install --quiet "ralph-malph[lrs,cli]"
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 150); do curl -fs "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not up: $*" >&2; return 1; }

"$SUIVI" simulate --print-xapi-mapping >"$work/xapi.toml"
token=$("$SUIVI" credentials --file "$work/credentials.toml" add lms --write-source openclassrooms \
  --write-source gendform3 --events-per-second 100000000 --new-campaigns-per-day 1000 | tail -n 1)
export RALPH_APP_DIR="$work/ralph" RALPH_RUNSERVER_BACKEND=fs
mkdir -p "$RALPH_APP_DIR"
"$RALPH_VENV/bin/ralph" auth -u lms -p "$token" -s all -A lms https://lms.example -w 2>/dev/null

# send URL: the statements of the run to URL; prints the statements/s simulate reached.
send() {
  local line
  line=$("$SUIVI" simulate --xapi "$1" --no-clicks --token "$token" --basic-user lms \
    --seed 1 --scale "$SCALE" --batch-size "$BATCH" 2>/dev/null | grep '^sent ')
  echo "  $line" >&2
  # "sent N xAPI statements and 0 clicks in R requests in S s (X records a second), ..."
  sed -E 's/.*\(([0-9]+) records a second\).*/\1/' <<<"$line"
}

run_suivi() {
  local data http grpc serve rate
  data=$(mktemp -d "$work/suivi.XXXX"); http=$(free_port); grpc=$(free_port)
  "$SUIVI" serve --config "$work/xapi.toml" --credentials "$work/credentials.toml" \
    --grpc-addr "127.0.0.1:$grpc" --http-addr "127.0.0.1:$http" --data-dir "$data" >"$data/log" 2>&1 &
  serve=$!
  wait_for "http://127.0.0.1:$http/readyz"
  rate=$(send "http://127.0.0.1:$http/xAPI")
  kill -TERM "$serve"; wait "$serve" || true
  echo "$rate"
}

run_ralph() {
  local store port ralph rate
  store=$(mktemp -d "$work/ralph.XXXX"); port=$(free_port)
  RALPH_BACKENDS__LRS__FS__DEFAULT_DIRECTORY_PATH="$store" "$RALPH_VENV/bin/python" -c '
import sys, uvicorn
from ralph.backends.data.base import BaseOperationType
from ralph.backends.lrs.fs import FSLRSBackend
FSLRSBackend.default_operation_type = BaseOperationType.APPEND
uvicorn.run("ralph.api:app", host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
' "$port" >"$store/log" 2>&1 &
  ralph=$!
  wait_for -u "lms:$token" "http://127.0.0.1:$port/whoami"
  rate=$(send "http://127.0.0.1:$port/xAPI")
  local stored
  stored=$(cat "$store"/*.jsonl | wc -l)
  echo "  Ralph stored $stored statements" >&2
  kill -TERM "$ralph"; wait "$ralph" || true
  echo "$rate"
}

declare -a suivi ralph
for round in $(seq "$ROUNDS"); do
  echo "round $round (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
  echo " suivi:" >&2; suivi+=("$(run_suivi)")
  echo " Ralph:" >&2; ralph+=("$(run_ralph)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
s=$(median "${suivi[@]}"); r=$(median "${ralph[@]}")
echo "suivi: ${suivi[*]} statements/s (median $s)"
echo "Ralph: ${ralph[*]} statements/s (median $r)"
awk -v s="$s" -v r="$r" 'BEGIN { printf "suivi/Ralph: %.1f\n", s / r }'
