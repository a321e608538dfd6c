#!/usr/bin/env bash
# Pipelining burst (issue #7 item 9): builds the release binary and
# bench/pipeline.rs, then for each storage backend starts the broker on a
# loopback port and has CONNECTIONS connections each write REQUESTS
# pipelined GET /api/voice/token/<id> at once, while a probe times a normal
# request every 100 ms. Prints the broker's RSS before / at its peak /
# SETTLE seconds after, the probe's p50/p99/max and the share of requests
# shed with 503 overloaded, then all backends side by side.
#
#   bench/pipeline.sh                          # memory and single; 200 x 2,000
#   CONNECTIONS=1000 REQUESTS=200 bench/pipeline.sh
#   BACKENDS=memory EXTRA_ENV=BROKER__SERVER__MAX_INFLIGHT_REQUESTS=0 bench/pipeline.sh
#
# single needs redis-server (started here on a loopback port, removed at
# the end). Bounded: at most 1,000 x 10,000 requests, 60 s per burst.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-200}
REQUESTS=${REQUESTS:-2000}
SETTLE=${SETTLE:-5}
BACKENDS=${BACKENDS:-memory single}
EXTRA_ENV=${EXTRA_ENV:-}

cargo build --release --quiet --bin rtc-broker --example pipeline
source bench/lib.sh

run() { # label [--env K=V ...]
  local label=$1; shift
  local extra=()
  for kv in $EXTRA_ENV; do extra+=(--env "$kv"); done
  target/release/examples/pipeline --broker-bin target/release/rtc-broker \
    --connections "$CONNECTIONS" --requests "$REQUESTS" --settle-seconds "$SETTLE" \
    --timeout-seconds 60 --label "$label" "${extra[@]}" "$@" | tee -a "$work/results"
  echo
}

for backend in $BACKENDS; do
  case $backend in
    memory) run memory ;;
    single)
      if ! command -v redis-server >/dev/null; then
        echo "skipping single: redis-server not installed" >&2; continue
      fi
      start_redis 46380
      run single --env REDIS_URL=redis://127.0.0.1:46380 ;;
    *) echo "unknown backend $backend" >&2; exit 2 ;;
  esac
done

echo "side by side ($CONNECTIONS connections x $REQUESTS pipelined requests; RSS MiB; probe ms):"
awk -F'\t' '$1=="RESULT" { printf "  %-8s RSS %5s -> peak %5s, after %5s   probe p50 %6s  p99 %7s  max %7s   shed %5s %%  other %s  unanswered %s  broken %s\n", $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 }' "$work/results"
