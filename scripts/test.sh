#!/usr/bin/env bash
# Everything CI checks, from a fresh clone: installs the pinned Azurite from package-lock.json,
# then checks formatting and lints, runs every test (the tests start Azurite themselves), and
# builds and checks the Function App package (scripts/package.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund --loglevel=error
cargo fmt --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
# The Function App package: built for glibc 2.28, run against Debian bullseye's glibc, zip checked.
scripts/package.sh
