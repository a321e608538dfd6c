#!/usr/bin/env bash
# Rooms benchmark, side by side with the socket.io + Redis adapter peer of
# ../shared/peers (same machine, same Redis, same load generator):
#
#   (a) fan-out: 2 rooms x 50 clients over two instances, 500 msg/s
#   (k) small fan-out: 2 rooms x 10 clients, 1000 msg/s
#   (i) RSS per idle connection: IDLE_CONNS idle sockets on a fresh instance
#
# For each run: messages/s, publish->receive p50/p99, lost, duplicates,
# disconnects, server CPU per delivery (both instances, microseconds), and
# the ratios broker/peer. Broker and peer alternate run by run so drift
# hits both; medians over RUNS runs are compared. The brokers run with
# rooms.messages_per_second = 1000: the load generator publishes from a
# random member, and at 1000 msg/s over 20 clients (k) that averages the
# default limit of 50 per client, so bursts would be refused.
#
#   bench/rooms.sh                       # RUNS=3 DURATION=8 IDLE_CONNS=5000
#   RUNS=5 DURATION=10 bench/rooms.sh
#   RUNS=1 IDLE_CONNS=0 bench/rooms.sh  # a quick look, no idle phase
#   RUNS=0 bench/rooms.sh                # the idle phase only
#
# Needs node/npm (the peer and the load generator come from
# ../shared/peers; their locked dependencies are installed with `npm ci`
# into target/peers), redis-server, curl and python3. Loopback only; every
# phase is bounded by DURATION (plus connect and drain time).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
# One HTTP worker per instance: two instances share the two cores here, as
# the two single-threaded Node instances of the peer do.
export BROKER__SERVER__WORKERS=${BROKER__SERVER__WORKERS:-1}
DURATION=${DURATION:-8}
IDLE_CONNS=${IDLE_CONNS:-5000}
# Ports below the ephemeral range (32768+), which thousands of client
# sockets would otherwise collide with.
REDIS_PORT=${REDIS_PORT:-26391}
BROKER_PORTS=(28081 28082)
PEER_PORTS=(23101 23102)

# --- the peer and the load generator, with their locked dependencies ----------
src=../shared/peers
peers=target/peers
for need in "$src/bench/ws/fanout.mjs" "$src/rooms-socketio/server.js"; do
  [ -f "$need" ] || { echo "missing $need: the workspace's shared/peers must sit beside the repo" >&2; exit 1; }
done
mkdir -p "$peers/bench" "$peers/rooms-socketio"
cp -r "$src/bench/." "$peers/bench/"
cp "$src/rooms-socketio/server.js" "$src/rooms-socketio/package.json" \
  "$src/rooms-socketio/package-lock.json" "$peers/rooms-socketio/"
for dir in "$peers/bench/ws" "$peers/rooms-socketio"; do
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --silent)
  fi
done
ws="$peers/bench/ws"

cargo build --release --quiet --bin rtc-broker
source bench/lib.sh

hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 65536 ]; then ulimit -n 65536; else ulimit -n "$hard"; fi

start_redis "$REDIS_PORT"

start_broker() { # port
  PORT=$1 HOST=127.0.0.1 SERVER_ID="bench-$1" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
    TOKEN_SECRET=bench-secret-0123456789abcdef0123456789 RUST_LOG=warn BROKER_CONFIG_DIR=/nonexistent \
    BROKER__ROOMS__MESSAGES_PER_SECOND=1000 \
    target/release/rtc-broker serve >"$work/broker-$1.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  disown
  echo "$pid" >"$work/broker-$1.pid"
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$1/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "broker on $1 did not start; see $work/broker-$1.log" >&2; exit 1
}
stop_broker() { kill -TERM "$(cat "$work/broker-$1.pid")" 2>/dev/null || true; sleep 1; }
peer_pid() { cat "/tmp/rooms-socketio-$1.pid"; }
stop_peers() { "$ws/socketio_peers.sh" stop "${PEER_PORTS[@]}" >/dev/null 2>&1 || true; }
trap 'stop_peers; cp "$work"/broker-*.log target/ 2>/dev/null; cleanup' EXIT

for p in "${BROKER_PORTS[@]}"; do start_broker "$p"; done
"$ws/socketio_peers.sh" start "$REDIS_PORT" "${PEER_PORTS[@]}" >/dev/null
redis_pid=$(redis-cli -p "$REDIS_PORT" info server | awk -F: '/^process_id/ {print $2}' | tr -d '\r')

broker_urls="http://127.0.0.1:${BROKER_PORTS[0]},http://127.0.0.1:${BROKER_PORTS[1]}"
peer_urls="http://127.0.0.1:${PEER_PORTS[0]},http://127.0.0.1:${PEER_PORTS[1]}"
broker_pids() { echo "$(cat "$work/broker-${BROKER_PORTS[0]}.pid"),$(cat "$work/broker-${BROKER_PORTS[1]}.pid"),$redis_pid"; }
peer_pids() { echo "$(peer_pid "${PEER_PORTS[0]}"),$(peer_pid "${PEER_PORTS[1]}"),$redis_pid"; }

fanout() { # scenario proto rooms clients rate
  local scenario=$1 proto=$2 urls pids
  if [ "$proto" = broker ]; then urls=$broker_urls pids=$(broker_pids); else urls=$peer_urls pids=$(peer_pids); fi
  node "$ws/fanout.mjs" --proto "$proto" --urls "$urls" --rooms "$3" --clients-per-room "$4" \
    --rate "$5" --duration "$DURATION" --warmup 2 --pids "$pids" --quiet \
    | sed "s/^{/{\"scenario\":\"$scenario\",/" | tee -a "$work/fanout.jsonl"
}

echo "== fan-out: $RUNS runs each, ${DURATION}s, broker and peer alternating"
for run in $(seq "$RUNS"); do
  for proto in broker socketio; do
    fanout a "$proto" 2 50 500
    fanout k "$proto" 2 10 1000
  done
done

if [ "$IDLE_CONNS" -gt 0 ]; then
echo "== idle connections: $IDLE_CONNS on a fresh instance of each"
stop_broker "${BROKER_PORTS[0]}"
start_broker "${BROKER_PORTS[0]}"
sleep 1
HOLD=6 SETTLE=2 "$ws/idle_rss.sh" "$(cat "$work/broker-${BROKER_PORTS[0]}.pid")" \
  "http://127.0.0.1:${BROKER_PORTS[0]}" "$IDLE_CONNS" broker | tee -a "$work/idle.txt"
"$ws/socketio_peers.sh" stop "${PEER_PORTS[0]}" >/dev/null
"$ws/socketio_peers.sh" start "$REDIS_PORT" "${PEER_PORTS[0]}" >/dev/null
sleep 1
HOLD=6 SETTLE=2 "$ws/idle_rss.sh" "$(peer_pid "${PEER_PORTS[0]}")" \
  "http://127.0.0.1:${PEER_PORTS[0]}" "$IDLE_CONNS" socketio | tee -a "$work/idle.txt"
fi
touch "$work/idle.txt" "$work/fanout.jsonl"

python3 bench/rooms_summary.py "$work/fanout.jsonl" "$work/idle.txt"
