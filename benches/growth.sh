#!/usr/bin/env bash
# How the real binary's cost grows with the programme (issue 15's growth table): for each
# SCALE, a release `suivi serve` (default settings, a fresh data directory, checkpoints every
# CHECKPOINT_INTERVAL) is sent `suivi simulate --seed 1 --scale SCALE`, then this prints
#   - what it holds (suivi_learners, suivi_campaign_learners, suivi_event_ids) and its
#     resident memory (VmRSS, and the peak VmHWM) once every event is acknowledged;
#   - the final checkpoint SIGTERM writes (every shard's, summed, from the log's "checkpoint
#     written" lines: the file's bytes and the id runs it wrote) and how long the slowest shard
#     took to write its own; the bytes all checkpoints wrote; the checkpoints and id runs left
#     on disk;
#   - a restart on the same directory (SIGTERM, then serve again): the time from start to
#     /readyz, the recovery the log reports, and the resident memory after it;
#   - a replay: the same events into a fresh serve that takes no checkpoint (its resident
#     memory then, to compare with the first serve's, which checkpointed), killed with
#     SIGKILL, then served again, so that the whole journal is replayed: its events/s
#     (suivi_recovery_replayed_events summed over the shards / the slowest shard's
#     suivi_recovery_duration_seconds: the shards recover side by side).
#
#   cargo build --release && benches/growth.sh [SCALE...]        (default: 10 30)
set -euo pipefail
cd "$(dirname "$0")/.."
SUIVI=${SUIVI:-./target/release/suivi}
[ -x "$SUIVI" ] || { echo "build first: cargo build --release (or set SUIVI)" >&2; exit 1; }
CHECKPOINT_INTERVAL=${CHECKPOINT_INTERVAL:-20s}
scales=("$@")
[ ${#scales[@]} -gt 0 ] || scales=(10 30)
work=$(mktemp -d "${TMPDIR:-/tmp}/suivi-growth.XXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# metric NAME [max]: the sum of its series (one per shard for some), or their largest.
metric() {
  curl -fs "http://127.0.0.1:$http/metrics" |
    awk -v name="$1" -v how="${2:-sum}" '{ split($1, a, "{") } a[1] == name {
      sum += $2; if (!found || $2 > max) max = $2; found = 1 }
      END { if (found) printf "%.10g\n", how == "max" ? max : sum }'
}
status_kib() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }
mib() { awk -v kib="$1" 'BEGIN { printf "%.0f MiB", kib / 1024 }'; }
# final_checkpoint: "BYTES SECONDS RUN_BYTES COUNT ALL_BYTES ALL_RUN_BYTES" of the checkpoints
# logged: the last each shard wrote (file bytes summed, the slowest shard's seconds, the id-run
# bytes it wrote), then how many there were and the bytes of all of them, files and id runs.
final_checkpoint() {
  python3 - "$data/serve.log" <<'PY'
import json, sys
last = {}
count = all_bytes = all_runs = 0
for line in open(sys.argv[1]):
    try:
        fields = json.loads(line)["fields"]
    except (ValueError, KeyError):
        continue
    if fields.get("message") == "checkpoint written":
        last[fields.get("shard")] = fields
        count += 1
        all_bytes += fields["bytes"]
        all_runs += fields.get("id_run_bytes", 0)
print(sum(f["bytes"] for f in last.values()), max(f["seconds"] for f in last.values()),
      sum(f.get("id_run_bytes", 0) for f in last.values()), count, all_bytes, all_runs)
PY
}
# on_disk: "CHECKPOINT_BYTES RUN_BYTES RUNS" of the files in $data now.
on_disk() {
  find "$data" -name '*.ckpt' -printf '%s\n' | awk '{ s += $1 } END { printf "%d ", s }'
  find "$data" -name 'ids-*.run' -printf '%s\n' | awk '{ s += $1; n++ } END { printf "%d %d\n", s, n }'
}

# serve [SETTINGS...]: starts suivi on $data with these SUIVI_ settings; sets $serve, and $ready
# to the seconds it took to answer /readyz.
serve() {
  local started
  started=$(date +%s.%N)
  env SUIVI_LOG_FORMAT=json SUIVI_CHECKPOINT_INTERVAL="$CHECKPOINT_INTERVAL" "$@" "$SUIVI" serve --grpc-addr "127.0.0.1:$grpc" \
    --http-addr "127.0.0.1:$http" --data-dir "$data" >>"$data/serve.log" 2>&1 &
  serve=$!
  until curl -fs "http://127.0.0.1:$http/readyz" >/dev/null 2>&1; do
    kill -0 "$serve" 2>/dev/null || { tail -5 "$data/serve.log" >&2; exit 1; }
    sleep 0.02
  done
  ready=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
}

stop() { kill -"${1:-TERM}" "$serve"; { wait "$serve" || true; } 2>/dev/null; }
simulate() { "$SUIVI" simulate --grpc "http://127.0.0.1:$grpc" --seed 1 --scale "$scale" 2>/dev/null | grep '^sent '; }

for scale in "${scales[@]}"; do
  data=$(mktemp -d "$work/data.XXXX"); grpc=$(free_port); http=$(free_port)
  serve
  sent=$(simulate)
  learners=$(metric suivi_learners); campaign_learners=$(metric suivi_campaign_learners)
  ids=$(metric suivi_event_ids)
  rss=$(status_kib "$serve" VmRSS); hwm=$(status_kib "$serve" VmHWM)
  echo "scale $scale: $sent"
  echo "  held: $learners learners, $campaign_learners (campaign, learner), $ids event ids"
  echo "  resident: $(mib "$rss") ($(awk -v r="$rss" -v n="$campaign_learners" 'BEGIN { printf "%.0f", r * 1024 / n }') bytes per (campaign, learner), everything included), peak $(mib "$hwm")"
  stop
  read -r bytes seconds run_bytes count all_bytes all_runs < <(final_checkpoint)
  echo "  final checkpoint: $bytes bytes ($(awk -v b="$bytes" -v n="$campaign_learners" 'BEGIN { printf "%.0f", b / n }') per (campaign, learner)) and $run_bytes bytes of id runs written, the slowest shard's in $seconds s"
  echo "  all $count checkpoints (shards counted apart): $all_bytes bytes of checkpoint files and $all_runs bytes of id runs written"
  read -r disk_checkpoints disk_runs disk_run_files < <(on_disk)
  echo "  on disk after SIGTERM: checkpoints $disk_checkpoints bytes (two kept a shard), id runs $disk_runs bytes in $disk_run_files files"
  serve
  echo "  restart: ready in $ready s (recovery $(metric suivi_recovery_duration_seconds max) s, $(metric suivi_recovery_replayed_events) events replayed), resident $(mib "$(status_kib "$serve" VmRSS)")"
  stop
  rm -rf "$data"; data=$(mktemp -d "$work/data.XXXX")
  never=(SUIVI_CHECKPOINT_INTERVAL=100days SUIVI_CHECKPOINT_JOURNAL_BYTES=1000000000000000)
  serve "${never[@]}"
  simulate >/dev/null
  echo "  without checkpoints: resident $(mib "$(status_kib "$serve" VmRSS)"), peak $(mib "$(status_kib "$serve" VmHWM)")"
  stop KILL
  serve "${never[@]}"
  replayed=$(metric suivi_recovery_replayed_events); seconds=$(metric suivi_recovery_duration_seconds max)
  echo "  replay of the whole journal: $replayed events in $seconds s ($(awk -v e="$replayed" -v s="$seconds" 'BEGIN { printf "%.0f", e / s }') events/s), ready in $ready s"
  stop
  rm -rf "$data"
done
