#!/usr/bin/env bash
# Token benchmark: builds the release binary and the load generator, then
# for each storage backend starts the broker on a loopback port and drives
# token issue and token fetch for a bounded time, printing requests/s and
# p50/p99 latency per operation, and at the end all backends side by side.
#
#   bench/run.sh                         # memory, single (multiplexed and
#                                        # pooled), cluster; 5 s per operation
#   SECONDS_PER_OP=10 CONCURRENCY=64 bench/run.sh
#   BACKENDS="memory single" bench/run.sh
#   BACKENDS="single single-limited" bench/run.sh   # the rate limits' cost
#   BACKENDS="single single-ip-limited" bench/run.sh  # per-IP limit only
#
# Redis backends use real redis-server processes started here on loopback
# ports (3 masters + 3 replicas for the cluster) and removed at the end.
# Client, broker and Redis share the machine's cores: the figures are only
# comparable between runs on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_OP=${SECONDS_PER_OP:-5}
CONCURRENCY=${CONCURRENCY:-32}
BACKENDS=${BACKENDS:-memory single single-pool cluster}
POOL_SIZE=${POOL_SIZE:-16}

cargo build --release --quiet --bin rtc-broker --example loadgen
source bench/lib.sh

ensure_single() {
  redis-cli -p 46379 ping >/dev/null 2>&1 || start_redis 46379
  redis-cli -p 46379 flushall >/dev/null
}

run() { # label [--env K=V ...]
  local label=$1; shift
  target/release/examples/loadgen --broker-bin target/release/rtc-broker \
    --seconds "$SECONDS_PER_OP" --concurrency "$CONCURRENCY" --label "$label" "$@" \
    | tee -a "$work/results"
  echo
}

for backend in $BACKENDS; do
  case $backend in
    memory) run memory ;;
    single)
      ensure_single
      run single --env REDIS_URL=redis://127.0.0.1:46379 ;;
    memory-limited | single-limited | single-ip-limited)
      # Rate limits on, so high that nothing is refused: every issue then
      # runs the window script twice (client IP, session id), or once with
      # only the per-IP limit (the production default's shape).
      limits=(--env BROKER__RATE_LIMIT__TOKENS_PER_WINDOW=1000000000)
      if [[ $backend != single-ip-limited ]]; then
        limits+=(--env BROKER__RATE_LIMIT__SESSION_WRITES_PER_WINDOW=1000000000)
      fi
      if [[ $backend == single*-limited ]]; then
        ensure_single
        limits+=(--env REDIS_URL=redis://127.0.0.1:46379)
      fi
      run "$backend" "${limits[@]}" ;;
    single-pool)
      ensure_single
      run "single-pool$POOL_SIZE" --env REDIS_URL=redis://127.0.0.1:46379 \
        --env BROKER__REDIS__POOL_SIZE="$POOL_SIZE" ;;
    cluster)
      nodes=()
      for port in 47001 47002 47003 47004 47005 47006; do
        start_redis "$port" --cluster-enabled yes --cluster-config-file "nodes-$port.conf"
        nodes+=("127.0.0.1:$port")
      done
      redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
      for _ in $(seq 200); do
        redis-cli -p 47001 cluster info | grep -q cluster_state:ok && break
        sleep 0.05
      done
      run cluster --env REDIS_MODE=cluster \
        --env REDIS_CLUSTER_NODES="$(IFS=,; echo "${nodes[*]}")" ;;
    *) echo "unknown backend $backend" >&2; exit 2 ;;
  esac
done

echo "side by side (req/s, p50 ms, p99 ms, errors; $CONCURRENCY client tasks, ${SECONDS_PER_OP}s each):"
awk -F'\t' '$1=="RESULT" { printf "  %-17s %-6s %9s req/s  p50 %6s  p99 %6s  errors %s\n", $2, $3, $4, $5, $6, $7 }' "$work/results"
