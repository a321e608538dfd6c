#!/usr/bin/env bash
# Recording benchmark (issue #9): builds the release binary and
# bench/recordings.rs, then for each backend starts the broker on a
# loopback port and measures chunk upload throughput (MB/s, p50/p99 per
# chunk) over HTTP and over the recording WebSocket; on the first backend
# also the merge time of 10, 100 and 1,000 chunks of both kinds next to a
# plain `cat` of the same bytes (the physical floor).
#
#   bench/recordings.sh                               # memory and single; 800 x 256 KiB, 4 at once
#   CHUNKS=2000 CHUNK_KIB=1024 CONCURRENCY=8 bench/recordings.sh
#   BACKENDS=memory MERGE_MAX=100 bench/recordings.sh
#
# Needs ffmpeg (test media, merges) and, for single, redis-server (started
# here on a loopback port, removed at the end). Bounded: at most 4,000
# chunks of 16 MiB per phase, 16 uploaders, merges of at most 1,000 chunks.
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNKS=${CHUNKS:-800}
CHUNK_KIB=${CHUNK_KIB:-256}
CONCURRENCY=${CONCURRENCY:-4}
MERGE_MAX=${MERGE_MAX:-1000}
BACKENDS=${BACKENDS:-memory single}
REDIS_PORT=${REDIS_PORT:-26392}

cargo build --release --quiet --bin rtc-broker --example recordings
source bench/lib.sh

merge=--merge
for backend in $BACKENDS; do
  extra=()
  case $backend in
    memory) ;;
    single)
      start_redis "$REDIS_PORT"
      extra=(--env "REDIS_URL=redis://127.0.0.1:$REDIS_PORT") ;;
    *) echo "unknown backend $backend (memory, single)" >&2; exit 2 ;;
  esac
  echo "== $backend"
  target/release/examples/recordings --label "$backend" --chunks "$CHUNKS" \
    --chunk-kib "$CHUNK_KIB" --concurrency "$CONCURRENCY" --merge-max "$MERGE_MAX" \
    $merge "${extra[@]}"
  merge=
  echo
done
