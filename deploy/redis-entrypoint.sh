#!/bin/sh
# Starts one Redis node of a master + replica set watched by Sentinel, for the
# redis:7 image (docker-compose.yml, and k8s/redis.yaml, which carries a copy
# of this file in its ConfigMap: scripts/validate-deploy.sh checks they match).
#
# Which role: a node asks the sentinels for the current master first, so a
# node restarted after a failover comes back as a replica of the promoted
# node instead of as a second master with stale data. When no sentinel
# answers (the first start of the whole set), REDIS_INITIAL_MASTER is the
# master and every other node its replica.
#
# Environment:
#   REDIS_ANNOUNCE_HOST   name the others reach this node by (required)
#   REDIS_INITIAL_MASTER  name of the master on a fresh start (required)
#   REDIS_PORT            default 6379
#   REDIS_INITIAL_MASTER_PORT  default REDIS_PORT
#   REDIS_SENTINELS       host:port,host:port of the sentinels (may be empty)
#   REDIS_SENTINEL_NAME   default mymaster
#   REDIS_PASSWORD        optional; becomes requirepass and masterauth
#   REDIS_DATA_DIR        default /data
set -eu

self=${REDIS_ANNOUNCE_HOST:?REDIS_ANNOUNCE_HOST must name this node}
initial=${REDIS_INITIAL_MASTER:?REDIS_INITIAL_MASTER must name the first master}
port=${REDIS_PORT:-6379}
initial_port=${REDIS_INITIAL_MASTER_PORT:-$port}
name=${REDIS_SENTINEL_NAME:-mymaster}
password=${REDIS_PASSWORD:-}
dir=${REDIS_DATA_DIR:-/data}

# Sentinel's CONFIG REWRITE writes auth-pass back unquoted (seen with Redis
# 7.0), so a password with blanks, quotes or backslashes would break the file
# on the next start: refuse one (e.g. use `openssl rand -hex 32`).
case $password in
*[[:space:]\\\"\']*)
  echo "REDIS_PASSWORD must not contain blanks, quotes or backslashes" >&2
  exit 2
  ;;
esac

log() { echo "redis-entrypoint: $*" >&2; }

# The addresses a name resolves to, one a line (nothing when it does not).
addresses() { getent ahosts "$1" 2>/dev/null | awk '{ print $1 }' | sort -u; }

# Whether a host name (or address) is this node.
is_self() {
  [ "$1" = "$self" ] && return 0
  [ "$1" = "$(cat /proc/sys/kernel/hostname)" ] && return 0
  mine=$(addresses "$self")
  [ -n "$mine" ] && [ "$(addresses "$1")" = "$mine" ]
}

# "host port" of the master the first answering sentinel knows, or nothing.
# Sentinels take no password (only the data nodes do).
sentinel_master() {
  for s in $(echo "${REDIS_SENTINELS:-}" | tr ',' ' '); do
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

master=$(sentinel_master)
replicaof=""
if [ -n "$master" ]; then
  if is_self "${master% *}"; then
    log "sentinels name this node ($master) as the master"
  else
    replicaof=$master
    log "sentinels name $master as the master: starting as its replica"
  fi
elif is_self "$initial"; then
  log "no sentinel answered: starting as the initial master"
else
  replicaof="$initial $initial_port"
  log "no sentinel answered: starting as a replica of the initial master $initial:$initial_port"
fi

# Only the password goes in through a configuration read from standard input
# ("redis-server -"), so it is not on the command line.
auth=""
if [ -n "$password" ]; then
  # A replica authenticates to its master, and any node may become a
  # replica after a failover: both settings on every node.
  auth="requirepass $password
masterauth $password"
fi

# protected-mode no: reached over the network, not loopback; access is by
# password (when set) and by who can reach the network.
# replica-announce-ip: the others (and the sentinels, which announce it) reach
# this node by name, since addresses change when a container or pod is
# recreated.
set -- redis-server - --port "$port" --dir "$dir" --appendonly yes \
  --protected-mode no --replica-announce-ip "$self"
if [ -n "$replicaof" ]; then
  set -- "$@" --replicaof "${replicaof% *}" "${replicaof#* }"
fi

cd "$dir"
if [ "$(id -u)" = 0 ] && command -v docker-entrypoint.sh >/dev/null 2>&1; then
  # The image's entrypoint chowns the data folder and drops to the redis user.
  set -- docker-entrypoint.sh "$@"
fi
exec "$@" <<EOF
$auth
EOF
