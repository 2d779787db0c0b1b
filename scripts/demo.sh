#!/usr/bin/env bash
# The bidbridge demo: real calls through the real daemon, on loopback.
#
#   scripts/demo.sh [--pbx freeswitch|asterisk] [--calls N] [--json PATH]
#
# Builds bidbridge, starts a throwaway PostgreSQL (installing it if absent),
# creates a fresh demo database, applies the migrations and the demo catalog
# (scripts/demo/catalog.toml), starts the daemon, then plays a switch with
# `bidbridge simulate` (scripts/demo/scenario.toml: callers pressing keys,
# buyers' phones that ring out, are busy or answer, and four loopback bidders)
# and prints what happened to every call, read back from the database.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PBX=freeswitch
CALLS=30
JSON=""
while [ $# -gt 0 ]; do
    case "$1" in
        --pbx) PBX=$2; shift 2 ;;
        --calls) CALLS=$2; shift 2 ;;
        --json) JSON=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$PBX" in freeswitch|asterisk) ;; *) echo "demo.sh: --pbx freeswitch or asterisk" >&2; exit 2 ;; esac

if ! command -v cargo >/dev/null 2>&1; then
    echo "demo.sh: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi

echo "== building bidbridge"
cargo build --quiet --bin bidbridge
BIN=target/debug/bidbridge

echo "== starting PostgreSQL (scripts/pg.sh)"
BASE_URL=$(scripts/pg.sh start | tail -n 1)
PGOPTIONS="-c client_min_messages=warning" scripts/pg.sh psql -d postgres -qc "DROP DATABASE IF EXISTS bidbridge_demo" >/dev/null
scripts/pg.sh psql -d postgres -qc "CREATE DATABASE bidbridge_demo" >/dev/null
DB_URL=${BASE_URL/dbname=bidbridge/dbname=bidbridge_demo}

OUT=target/demo
rm -rf "$OUT" && mkdir -p "$OUT"
cat > "$OUT/bidbridge.toml" <<EOF
[node]
id = "demo"
[database]
url = "$DB_URL"
[esl]
listen = "127.0.0.1:18084"
[agi]
listen = "127.0.0.1:14573"
[http]
listen = "127.0.0.1:18080"
[records]
journal_dir = "$OUT/journal"
[freeswitch]
sip_profile = "external"
prompts_dir = "/usr/share/freeswitch/sounds/bidbridge"
[calls]
drain_timeout_secs = 10
EOF
export BIDBRIDGE_CONFIG=$OUT/bidbridge.toml

echo "== migrating and loading the demo catalog"
$BIN migrate
$BIN catalog apply scripts/demo/catalog.toml | tail -n 1
$BIN check | tail -n 1

echo "== starting the daemon (log: $OUT/daemon.log)"
$BIN run >"$OUT/daemon.log" 2>&1 &
DAEMON=$!
trap 'kill -TERM $DAEMON 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    if curl -fsS http://127.0.0.1:18080/readyz >/dev/null 2>&1; then break; fi
    if ! kill -0 $DAEMON 2>/dev/null; then echo "daemon exited:"; cat "$OUT/daemon.log"; exit 1; fi
    sleep 0.1
done
curl -fsS http://127.0.0.1:18080/readyz

echo "== placing $CALLS calls through $PBX"
if [ "$PBX" = freeswitch ]; then TARGET=(--esl 127.0.0.1:18084); else TARGET=(--pbx asterisk --agi 127.0.0.1:14573); fi
$BIN simulate --scenario scripts/demo/scenario.toml "${TARGET[@]}" --calls "$CALLS" --json "$OUT/simulator.json" | tail -n 3 || true

# Stop the daemon: it drains and flushes every record before exiting.
kill -TERM $DAEMON
wait $DAEMON || true
trap - EXIT

echo
echo "== what happened to each call (from PostgreSQL)"
if [ -n "$JSON" ]; then
    $BIN report calls --last "$CALLS" --json "$JSON"
else
    $BIN report calls --last "$CALLS"
fi
echo
echo "== totals by buyer"
$BIN report --by buyer --since 1h
echo
echo "== totals by campaign"
$BIN report --by campaign --since 1h
