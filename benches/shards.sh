#!/usr/bin/env bash
# End to end, durable gRPC ingest with 1 shard against N shards: `suivi simulate --scale SCALE`
# (4 IngestStreams, batches of 1,000) against a release `suivi serve` with a fresh data
# directory, alternately `--shards 1` and `--shards N`, ROUNDS times each, in one run, so both
# see the same noisy machine. The load generator runs on the same machine. Prints each run's
# events/s and the medians' ratio; BENCHMARKS.md has the figures.
#
#   cargo build --release && benches/shards.sh [ROUNDS] [SCALE] [N]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SCALE=${2:-1}
SHARDS=${3:-2}
SUIVI=${SUIVI:-./target/release/suivi}
[ -x "$SUIVI" ] || { echo "build first: cargo build --release (or set SUIVI)" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run SHARDS: one serve + simulate; prints the events/s simulate reached.
run() {
  local shards=$1 data grpc http serve line
  data=$(mktemp -d "$work/data.XXXX"); grpc=$(free_port); http=$(free_port)
  "$SUIVI" serve --shards "$shards" --grpc-addr "127.0.0.1:$grpc" --http-addr "127.0.0.1:$http" \
    --data-dir "$data" >"$data/serve.log" 2>&1 &
  serve=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$http/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  line=$("$SUIVI" simulate --grpc "http://127.0.0.1:$grpc" --seed 1 --scale "$SCALE" 2>/dev/null | grep '^sent ')
  kill -TERM "$serve"; wait "$serve" || true
  echo "$shards shard(s): $line" >&2
  # "sent N events in S s (R events/s): ..."
  sed -E 's/.*\(([0-9]+) events\/s\).*/\1/' <<<"$line"
}

declare -a one many
for round in $(seq "$ROUNDS"); do
  echo "round $round (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
  one+=("$(run 1)")
  many+=("$(run "$SHARDS")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
o=$(median "${one[@]}"); m=$(median "${many[@]}")
echo "1 shard:  ${one[*]} events/s (median $o)"
echo "$SHARDS shards: ${many[*]} events/s (median $m)"
awk -v o="$o" -v m="$m" -v n="$SHARDS" 'BEGIN { printf "%d shards / 1 shard: %.2f\n", n, m / o }'
