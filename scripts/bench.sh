#!/usr/bin/env bash
# The bidbridge load and capacity benchmark (docs/performance.md).
#
#   scripts/bench.sh            full run (under 15 minutes)
#   scripts/bench.sh --quick    smaller steps, 1,000 held calls, ~10 s phases (under 2 minutes)
#   scripts/bench.sh --tiny     a few hundred calls, correctness only; non-zero exit on failure
#
# Builds bidbridge in release mode, starts a private throwaway PostgreSQL
# (target/bench/pg, socket port 54339), creates a fresh database, writes a
# daemon config (loopback only, journal in target/bench), applies the
# benchmark catalog (`bidbridge bench catalog`), starts the daemon, runs the
# phases with `bidbridge bench run` (which serves the 20 loopback buyers and
# plays FreeSWITCH), stops the daemon with SIGTERM, prints the table and
# writes target/bench/summary.json.
#
# BB_DAEMON_PREFIX runs the daemon under a profiler that becomes the daemon's
# process (valgrind; not wrapper scripts such as heaptrack, which would
# leave the daemon running after the SIGTERM), e.g.
#   BB_DAEMON_PREFIX="valgrind --tool=callgrind --callgrind-out-file=target/bench/cg.out" \
#       scripts/bench.sh --tiny
# BB_BENCH_PREFIX does the same for the load generator (simulator and buyers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MODE=full
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick; shift ;;
        --tiny) MODE=tiny; shift ;;
        --full) MODE=full; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if ! command -v cargo >/dev/null 2>&1; then
    echo "bench.sh: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi

# Thousands of calls at once: one socket each on both sides, plus pings.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "== file descriptors: $(ulimit -n)"

echo "== building bidbridge (release)"
cargo build --quiet --release --bin bidbridge
BIN=${CARGO_TARGET_DIR:-target}/release/bidbridge

OUT=target/bench
mkdir -p "$OUT"
rm -rf "$OUT/journal"
# A private cluster so the benchmark neither disturbs nor is disturbed by
# the test cluster in target/pg.
export BB_PGDIR=${BB_PGDIR:-$PWD/$OUT/pg}
export BB_PGPORT=${BB_PGPORT:-54339}
echo "== starting PostgreSQL ($BB_PGDIR)"
BASE_URL=$(scripts/pg.sh start | tail -n 1)
PGOPTIONS="-c client_min_messages=warning" scripts/pg.sh psql -d postgres -qc "DROP DATABASE IF EXISTS bidbridge_bench" >/dev/null
scripts/pg.sh psql -d postgres -qc "CREATE DATABASE bidbridge_bench" >/dev/null
DB_URL=${BASE_URL/dbname=bidbridge/dbname=bidbridge_bench}

cat > "$OUT/bidbridge.toml" <<CONF
[node]
id = "bench"
[database]
url = "$DB_URL"
[esl]
listen = "127.0.0.1:18094"
[agi]
enabled = false
[http]
listen = "127.0.0.1:18090"
[records]
journal_dir = "$OUT/journal"
[auction]
default_deadline_ms = 100
[calls]
drain_timeout_secs = 30
[log]
level = "warn"
CONF
export BIDBRIDGE_CONFIG=$OUT/bidbridge.toml

$BIN migrate >/dev/null
$BIN bench catalog --buyers 127.0.0.1:19100 > "$OUT/catalog.toml"
$BIN catalog apply "$OUT/catalog.toml" | tail -n 1

echo "== starting the daemon (log: $OUT/daemon.log)"
# Unquoted on purpose: the prefix is a command line.
# shellcheck disable=SC2086
${BB_DAEMON_PREFIX:-} $BIN run >"$OUT/daemon.log" 2>&1 &
DAEMON=$!
trap 'kill -TERM $DAEMON 2>/dev/null || true' EXIT
# A daemon under a profiler starts many times slower.
for _ in $(seq 1 600); do
    if curl -fsS http://127.0.0.1:18090/readyz >/dev/null 2>&1; then break; fi
    if ! kill -0 $DAEMON 2>/dev/null; then echo "daemon exited:"; cat "$OUT/daemon.log"; exit 1; fi
    sleep 0.1
done
curl -fsS http://127.0.0.1:18090/readyz >/dev/null

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%dT%H:%MZ)"
STATUS=0
# shellcheck disable=SC2086
${BB_BENCH_PREFIX:-} $BIN bench run --mode "$MODE" --pid "$DAEMON" --buyers 127.0.0.1:19100 --out "$OUT/summary.json" || STATUS=$?

# SIGTERM: the daemon drains calls and flushes every record before exiting.
kill -TERM $DAEMON
if ! wait $DAEMON; then
    echo "bench.sh: the daemon did not exit cleanly (see $OUT/daemon.log)" >&2
    [ "$STATUS" -ne 0 ] || STATUS=1
fi
trap - EXIT
if [ "$MODE" != tiny ] && [ -f "$OUT/summary.json" ]; then
    echo "== $OUT/summary.json"
    cat "$OUT/summary.json"
fi
exit $STATUS
