#!/usr/bin/env bash
# The cost of the trust boundary, end to end: `suivi simulate --scale 1` against a release
# `suivi serve`, alternately open (plain text, no credentials) and guarded (TLS on both
# listeners, a credentials file, the sender's token checked and its rate bucket taken for every
# batch), ROUNDS times each, in one run, so the two are compared on the same noisy machine.
# Prints one line per run and the median events/s of each; BENCHMARKS.md has the figures.
#
#   cargo build --release && benches/trust.sh [ROUNDS] [SCALE]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SCALE=${2:-1}
SUIVI=${SUIVI:-./target/release/suivi}
[ -x "$SUIVI" ] || { echo "build first: cargo build --release (or set SUIVI)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "openssl is needed (apt-get install -y openssl)" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# A CA and a server certificate for localhost, and a credential with a rate high enough never to
# refuse, so that what is measured is the checks, not the limit.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
  -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$work/key.pem" -out "$work/server.csr" 2>/dev/null
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 2 -out "$work/cert.pem" -extfile <(printf "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth") 2>/dev/null
token=$("$SUIVI" credentials --file "$work/credentials.toml" add bench \
  --write-source openclassrooms --write-source gendform3 --events-per-second 100000000 | tail -n 1)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run MODE: one serve + simulate; prints the events/s simulate reached.
run() {
  local mode=$1 data grpc http scheme=http extra=() send=()
  data=$(mktemp -d "$work/data.XXXX")
  grpc=$(free_port); http=$(free_port)
  if [ "$mode" = guarded ]; then
    scheme=https
    extra=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --credentials "$work/credentials.toml")
    send=(--ca-cert "$work/ca.pem" --token "$token")
  fi
  "$SUIVI" serve --grpc-addr "127.0.0.1:$grpc" --http-addr "127.0.0.1:$http" --data-dir "$data" \
    "${extra[@]}" >"$data/serve.log" 2>&1 &
  local serve=$!
  for _ in $(seq 100); do
    curl -fsk "$scheme://127.0.0.1:$http/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local line
  line=$("$SUIVI" simulate --grpc "$scheme://localhost:$grpc" --seed 1 --scale "$SCALE" "${send[@]}" 2>/dev/null | grep '^sent ')
  kill -TERM "$serve"; wait "$serve" || true
  echo "$mode: $line" >&2
  # "sent N events in S s (R events/s): ..."
  sed -E 's/.*\(([0-9]+) events\/s\).*/\1/' <<<"$line"
}

declare -a open guarded
for round in $(seq "$ROUNDS"); do
  echo "round $round (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
  open+=("$(run open)")
  guarded+=("$(run guarded)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
o=$(median "${open[@]}"); g=$(median "${guarded[@]}")
echo "open:    ${open[*]} events/s (median $o)"
echo "guarded: ${guarded[*]} events/s (median $g)"
awk -v o="$o" -v g="$g" 'BEGIN { printf "guarded/open: %.3f (%.1f%% cost)\n", g / o, (1 - g / o) * 100 }'
