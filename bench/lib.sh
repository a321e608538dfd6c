# Shared by the bench scripts (sourced, not run): a scratch directory and
# throwaway redis-server processes on loopback ports, all removed on exit.

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

start_redis() { # port [extra redis-server args...]
  local port=$1; shift
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" --daemonize no "$@" >"$work/redis-$port.log" 2>&1 &
  pids+=($!)
  disown
  for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "redis on $port did not start" >&2; exit 1
}
