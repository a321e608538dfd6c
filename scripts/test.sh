#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine or a developer's laptop:
# installs what the suite needs when it is missing (Redis server and tools,
# ffmpeg, Chromium, Node.js and npm), sets up the Node peer for tests/mixed_fleet,
# then runs formatting, lints, the deployment files' validation
# (scripts/validate-deploy.sh) and every test.
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
# tests/console drives the web console in headless Chromium (Debian's package).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# tests/mixed_fleet runs the Node peer. NodeSource's nodejs ships npm and
# conflicts with Debian's npm package, so npm only when the command is missing.
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
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
log "chromium: $(chromium --version 2>/dev/null | head -n1)"
log "node: $(node --version), npm $(npm --version)"

# --- Node peer (tests/mixed_fleet) ------------------------------------------
# The Node deployments' token service, from the workspace beside the repo,
# with its locked dependencies in target/node-seed (npm ci only when they are
# missing or the lock file changed).
seed_src=../shared/peers/node-seed
seed_dir=target/node-seed
if [ ! -f "$seed_src/server.js" ] || [ ! -f "$seed_src/package-lock.json" ]; then
  echo "missing $(cd .. && pwd)/shared/peers/node-seed (server.js, package.json," \
    "package-lock.json): tests/mixed_fleet needs the workspace's shared/peers beside the repo" >&2
  exit 1
fi
mkdir -p "$seed_dir"
if [ -d "$seed_dir/node_modules" ] &&
  cmp -s "$seed_src/package.json" "$seed_dir/package.json" &&
  cmp -s "$seed_src/package-lock.json" "$seed_dir/package-lock.json"; then
  log "node-seed: dependencies up to date in $seed_dir"
  install -m 0644 "$seed_src/server.js" "$seed_dir/server.js"
else
  log "node-seed: npm ci in $seed_dir"
  install -m 0644 "$seed_src/server.js" "$seed_src/package.json" "$seed_src/package-lock.json" "$seed_dir/"
  if ! (cd "$seed_dir" && npm ci --no-audit --no-fund); then
    rm -rf "$seed_dir/node_modules" # never taken for a finished install
    echo "npm ci failed in $seed_dir" >&2
    exit 1
  fi
fi
export NODE_SEED_DIR="$PWD/$seed_dir"

# --- Rust -------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
# cargo test, not nextest: the Redis topologies (a 6-node Cluster, a
# Sentinel set) are shared by all tests of one test binary, which needs the
# tests to run as threads of one process. The whole run is bounded in time.
# Dockerfile, compose files, k8s manifests and the Grafana dashboard,
# offline (no Docker engine, no cluster); installs its tools on first use.
log "deployment files"
scripts/validate-deploy.sh
log "cargo test"
timeout --signal=KILL 1500 cargo test --locked --no-fail-fast
log "all tests passed"
