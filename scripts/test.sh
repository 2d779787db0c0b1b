#!/usr/bin/env bash
# Runs every bidbridge test on this machine, installing what it needs:
# PostgreSQL (Debian's package, if absent) and a throwaway cluster in
# target/pg, started as the postgres user on a unix socket.
#
#   scripts/test.sh            all tests
#   scripts/test.sh NAME       only tests whose name contains NAME
#
# Without NAME it ends with `scripts/bench.sh --tiny` (a few hundred calls
# through a release build of the daemon, correctness checks only).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi

scripts/pg.sh start >/dev/null
# Databases left by earlier runs (each test makes its own).
for db in $(scripts/pg.sh psql -d postgres -tAc "SELECT datname FROM pg_database WHERE datname LIKE 'bb_test_%'" 2>/dev/null); do
    scripts/pg.sh psql -d postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
done

# Many tests run calls at once; give them file descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo test --all-targets "$@"
cargo test --doc "$@"

# The benchmark harness end to end, correctness only: every call completes,
# one record per call, no session left open. Skipped when filtering by name.
if [ $# -eq 0 ]; then
    scripts/bench.sh --tiny
fi
