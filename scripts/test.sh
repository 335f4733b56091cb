#!/usr/bin/env bash
# Everything CI checks, from a fresh clone: installs the pinned Azurite from package-lock.json,
# then checks formatting and lints, runs every test (the tests start Azurite themselves), and
# builds and checks the Function App package (scripts/package.sh). `--no-package` leaves the
# package out: the tests alone, for a developer's loop (CI runs the whole).
set -euo pipefail
cd "$(dirname "$0")/.."
with_package=true
case "${1:-}" in
  "") ;;
  --no-package) with_package=false ;;
  *)
    echo "usage: scripts/test.sh [--no-package]" >&2
    exit 2
    ;;
esac
# Azurite installs (network) while the tests compile (CPU); the tests wait for it.
npm_log="$(mktemp)"
npm ci --no-audit --no-fund --loglevel=error > "$npm_log" 2>&1 &
npm_ci=$!
cargo fmt --check

# The Function App package (scripts/package.sh: a release build for glibc 2.28, run against
# Debian bullseye's glibc, zipped and checked) builds beside the lints and tests, in a target
# directory of its own (cargo locks a target directory while it builds) and at the lowest CPU
# priority: it takes the cycles the tests leave idle — they mostly wait on Azurite and timers —
# and never theirs. Its outcome is checked last.
if $with_package; then
  package_log="$(mktemp)"
  CARGO_TARGET_DIR="${PACKAGE_TARGET_DIR:-target/package}" setsid nice -n 19 scripts/package.sh \
    > "$package_log" 2>&1 &
  package=$!
  # A failure before the end stops the package build too (its own process group).
  trap 'kill -- "-$package" 2> /dev/null || true' EXIT
fi

# Lints and tests share one build. Clippy compiles the workspace's own crates, as `cargo clippy`
# has it do, but in the build the tests run (clippy-driver is a rustc with Clippy's lints), so
# the dependencies are compiled once, not once to check and again to test. `-D warnings` makes
# any rustc or Clippy warning in our crates an error; dependencies are never linted.
clippy_driver="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver || true)"
if [ ! -x "$clippy_driver" ]; then
  echo "test.sh: clippy-driver not found (rustup component add clippy)" >&2
  exit 1
fi
lint_and_build() {
  RUSTC_WORKSPACE_WRAPPER="$clippy_driver" RUSTFLAGS="${RUSTFLAGS:-} -D warnings" cargo "$@"
}
# Every target is linted (benchmarks compiled, not run), then every test runs. The tests spend
# most of their time waiting on Azurite and on timers, so four run at once on two cores.
lint_and_build test --locked --workspace --all-targets --no-run
built=$SECONDS
if ! wait "$npm_ci"; then
  cat "$npm_log" >&2
  exit 1
fi
rm -f "$npm_log"
RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}" lint_and_build test --locked --workspace
tested=$SECONDS

if $with_package; then
  if ! wait "$package"; then
    cat "$package_log" >&2
    exit 1
  fi
  cat "$package_log"
  rm -f "$package_log"
fi
# Where the time went (the README's table of times is made from these lines).
echo "test.sh: built in ${built} s, tested by ${tested} s, done in ${SECONDS} s"
