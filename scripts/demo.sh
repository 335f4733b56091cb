#!/usr/bin/env bash
# Runs lakebackup end to end on this machine against a throw-away Azurite (installed from the
# pinned package-lock.json) and prints what happened. Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
# Azurite installs (network) while the demo compiles (CPU).
npm_log="$(mktemp)"
npm ci --no-audit --no-fund --loglevel=error > "$npm_log" 2>&1 &
npm_ci=$!
cargo build --locked --quiet -p lakebackup-devtools --bin lakebackup-dev
if ! wait "$npm_ci"; then
  cat "$npm_log" >&2
  exit 1
fi
rm -f "$npm_log"
RUST_LOG="${RUST_LOG:-warn}" cargo run --locked --quiet -p lakebackup-devtools --bin lakebackup-dev -- demo
