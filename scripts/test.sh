#!/usr/bin/env bash
# Everything CI checks, from a fresh clone: installs the pinned Azurite from package-lock.json,
# then checks formatting and lints, then runs every test (the tests start Azurite themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund --loglevel=error
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
