#!/usr/bin/env bash
# Reconcile benchmark: seeds Azurite with N blobs (default 10,000 and 100,000), then prints
# reconcile time, the raw listing floor measured in the same run, their ratio, and peak RSS.
# Usage: scripts/bench.sh [N ...]
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund --loglevel=error
cargo bench --locked --bench reconcile -- "$@"
