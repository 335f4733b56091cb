#!/usr/bin/env bash
# Runs lakebackup end to end on this machine against a throw-away Azurite (installed from the
# pinned package-lock.json) and prints what happened. Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund --loglevel=error
RUST_LOG="${RUST_LOG:-warn}" cargo run --locked --quiet -p lakebackup-devtools --bin lakebackup-dev -- demo
