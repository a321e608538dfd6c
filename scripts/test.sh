#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine or a developer's laptop:
# installs what the suite needs when it is missing (Redis server and tools,
# ffmpeg), then runs formatting, lints and every test.
#
#   scripts/test.sh
#
# .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

# --- system packages --------------------------------------------------------
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "missing ${need[*]} and not root: install them with apt-get install ${need[*]}" >&2
      exit 1
    }
    sudo="sudo"
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
  # The tests start their own Redis processes; a packaged service on 6379
  # would only get in the way.
  $sudo service redis-server stop >/dev/null 2>&1 || true
fi
log "redis: $(redis-server --version | head -n1)"
log "ffmpeg: $(ffmpeg -hide_banner -version | head -n1)"

# --- Rust -------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
# cargo test, not nextest: the Redis topologies (a 6-node Cluster, a
# Sentinel set) are shared by all tests of one test binary, which needs the
# tests to run as threads of one process. The whole run is bounded in time.
log "cargo test"
timeout --signal=KILL 1500 cargo test --locked --no-fail-fast
log "all tests passed"
