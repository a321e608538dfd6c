#!/bin/sh
# Starts one Redis Sentinel for the redis:7 image (docker-compose.yml, and
# k8s/redis.yaml, which carries a copy of this file in its ConfigMap:
# scripts/validate-deploy.sh checks they match).
#
# Why a script: Sentinel rewrites its configuration file at run time (the
# current master, the replicas and other sentinels it found, the config
# epoch), so the file must be writable and cannot be a read-only mount. It
# is generated here from the environment on the first start and kept on
# later starts, so a restarted sentinel keeps what it learnt (after a
# failover the master is no longer the initial one). It is generated anew
# when the inputs below change.
#
# The master to monitor on a fresh file: the one the other sentinels know,
# else the node that says ROLE master (preferring one with replicas), else
# REDIS_INITIAL_MASTER.
#
# Environment:
#   SENTINEL_ANNOUNCE_HOST  name the others reach this sentinel by (required)
#   REDIS_INITIAL_MASTER    master on the first start (required)
#   REDIS_PORT              default 6379
#   REDIS_NODES             host:port,... of the data nodes (default the initial master)
#   REDIS_SENTINELS         host:port,... of all sentinels (this one may be listed)
#   REDIS_SENTINEL_NAME     default mymaster
#   SENTINEL_PORT           default 26379
#   SENTINEL_QUORUM         default 2
#   SENTINEL_DOWN_AFTER_MS  default 5000
#   SENTINEL_FAILOVER_TIMEOUT_MS  default 10000
#   REDIS_PASSWORD          optional: the data nodes' password (auth-pass)
#   SENTINEL_CONF           default /data/sentinel.conf
set -eu

self=${SENTINEL_ANNOUNCE_HOST:?SENTINEL_ANNOUNCE_HOST must name this sentinel}
initial=${REDIS_INITIAL_MASTER:?REDIS_INITIAL_MASTER must name the first master}
port=${REDIS_PORT:-6379}
nodes=${REDIS_NODES:-$initial:$port}
name=${REDIS_SENTINEL_NAME:-mymaster}
sport=${SENTINEL_PORT:-26379}
quorum=${SENTINEL_QUORUM:-2}
down_after=${SENTINEL_DOWN_AFTER_MS:-5000}
failover_timeout=${SENTINEL_FAILOVER_TIMEOUT_MS:-10000}
password=${REDIS_PASSWORD:-}
conf=${SENTINEL_CONF:-/data/sentinel.conf}

# Sentinel's CONFIG REWRITE writes auth-pass back unquoted (seen with Redis
# 7.0), so a password with blanks, quotes or backslashes would break the file
# on the next start: refuse one (e.g. use `openssl rand -hex 32`).
case $password in
*[[:space:]\\\"\']*)
  echo "REDIS_PASSWORD must not contain blanks, quotes or backslashes" >&2
  exit 2
  ;;
esac

log() { echo "sentinel-entrypoint: $*" >&2; }

words() { echo "$1" | tr ',' ' '; }

# "host port" of the master another sentinel knows, or nothing.
peer_master() {
  for s in $(words "${REDIS_SENTINELS:-}"); do
    [ "${s%:*}" = "$self" ] && continue
    out=$(timeout 3 redis-cli -h "${s%:*}" -p "${s##*:}" --raw \
      sentinel get-master-addr-by-name "$name" 2>/dev/null) || continue
    # shellcheck disable=SC2086 # split the two lines "host" "port" into words
    set -- $out
    if [ $# -eq 2 ] && [ -n "$1" ] && [ "$2" -eq "$2" ] 2>/dev/null; then
      echo "$1 $2"
      return 0
    fi
  done
}

# "host port" of a data node that says ROLE master, one with replicas first.
node_master() {
  lone=""
  for n in $(words "$nodes"); do
    if [ -n "$password" ]; then
      out=$(REDISCLI_AUTH=$password timeout 3 redis-cli -h "${n%:*}" -p "${n##*:}" --raw role 2>/dev/null) || continue
    else
      out=$(timeout 3 redis-cli -h "${n%:*}" -p "${n##*:}" --raw role 2>/dev/null) || continue
    fi
    [ "$(echo "$out" | head -n 1)" = master ] || continue
    # ROLE of a master: "master", the offset, then host, port, offset per replica.
    if [ "$(echo "$out" | wc -l)" -gt 2 ]; then
      echo "${n%:*} ${n##*:}"
      return 0
    fi
    [ -n "$lone" ] || lone="${n%:*} ${n##*:}"
  done
  [ -z "$lone" ] || echo "$lone"
}

# What the generated file depends on (the password only as a digest).
stamp=$(printf '%s\n' "$self" "$initial" "$port" "$name" "$sport" "$quorum" \
  "$down_after" "$failover_timeout" "$(printf '%s' "$password" | sha256sum)" |
  sha256sum | cut -d' ' -f1)

if [ -s "$conf" ] && [ "$(cat "$conf.inputs" 2>/dev/null || true)" = "$stamp" ]; then
  log "keeping $conf (the sentinel's own state from its last run)"
else
  master=$(peer_master)
  if [ -n "$master" ]; then
    log "the other sentinels know the master: $master"
  else
    master=$(node_master)
    if [ -n "$master" ]; then
      log "no other sentinel answered; the node saying ROLE master: $master"
    else
      master="$initial $port"
      log "no sentinel or master answered: monitoring the initial master $master"
    fi
  fi
  # With resolve-hostnames, sentinel refuses to start on a name it cannot
  # resolve (a pod or container that does not exist yet): wait for it.
  waited=0
  until getent ahosts "${master% *}" >/dev/null 2>&1; do
    [ $((waited % 10)) -eq 0 ] && log "waiting for ${master% *} to resolve"
    sleep 1
    waited=$((waited + 1))
  done
  mkdir -p "$(dirname "$conf")"
  {
    echo "port $sport"
    echo "dir $(dirname "$conf")"
    # Reached over the network; sentinels hold no data, the nodes' password
    # is auth-pass below.
    echo "protected-mode no"
    # Names, not addresses, for the nodes and the sentinels: container and
    # pod addresses change when they are recreated. These two must come
    # before the monitor line.
    echo "sentinel resolve-hostnames yes"
    echo "sentinel announce-hostnames yes"
    echo "sentinel announce-ip $self"
    echo "sentinel announce-port $sport"
    echo "sentinel monitor $name $master $quorum"
    echo "sentinel down-after-milliseconds $name $down_after"
    echo "sentinel failover-timeout $name $failover_timeout"
    echo "sentinel parallel-syncs $name 1"
    if [ -n "$password" ]; then
      echo "sentinel auth-pass $name $password"
    fi
  } >"$conf.new"
  chmod 600 "$conf.new"
  mv "$conf.new" "$conf"
  echo "$stamp" >"$conf.inputs"
  log "wrote $conf"
fi

cd "$(dirname "$conf")"
if [ "$(id -u)" = 0 ] && command -v docker-entrypoint.sh >/dev/null 2>&1; then
  # The image's entrypoint chowns the folder and drops to the redis user.
  exec docker-entrypoint.sh redis-server "$conf" --sentinel
fi
exec redis-server "$conf" --sentinel
