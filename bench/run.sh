#!/usr/bin/env bash
# Token benchmark: builds the release binary and the load generator, starts
# the broker on a loopback port and drives token issue and token fetch for a
# bounded time, printing requests/s and p50/p99 latency per operation.
#
#   bench/run.sh                 # in-memory store, 10 s per operation
#   SECONDS_PER_OP=5 CONCURRENCY=64 bench/run.sh
#
# Client and broker share the machine's cores: the figures are a floor for
# the broker alone, and only comparable between runs on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin rtc-broker --example loadgen
exec target/release/examples/loadgen \
  --broker-bin target/release/rtc-broker \
  --seconds "${SECONDS_PER_OP:-10}" \
  --concurrency "${CONCURRENCY:-32}" \
  --label memory "$@"
