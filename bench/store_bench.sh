#!/usr/bin/env bash
# The store under load, on SQLite and on a throwaway PostgreSQL (issue 14's figures):
# `crates/sweep/examples/store_bench.rs` fills a sweep of TRIALS trials x EPOCHS epochs through
# WORKERS worker processes (claim latency measured there), then the real binary's `report`
# and `status` are timed over it, end to end (process start and connection included).
#
#   bash bench/store_bench.sh [TRIALS=10000] [EPOCHS=30] [WORKERS=6]
#
# Needs Debian's `postgresql` (initdb under /usr/lib/postgresql/*/bin); as root the server runs
# as the `postgres` user. The SQLite file lives in /dev/shm: with synchronous=FULL the fill
# would otherwise time this disk's fsync, not the store. The PostgreSQL server runs with
# fsync=off for the same reason. Neither changes what the readers do.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${1:-10000}
EPOCHS=${2:-30}
WORKERS=${3:-6}

cargo build --release -q -p sweep --bin cifar-sweep --example store_bench
BIN=target/release/cifar-sweep
BENCH=target/release/examples/store_bench

# The median of three wall times of a command, in seconds.
wall() {
  local times=()
  for _ in 1 2 3; do
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc -l)")
  done
  printf '%s\n' "${times[@]}" | sort -g | sed -n 2p | xargs printf '%.3f'
}

readers() {
  local db=$1
  echo "| \`cifar-sweep report store-bench\` (median of 3) | $(wall "$BIN" report store-bench --db "$db") s |"
  echo "| \`cifar-sweep report --format json\` (median of 3) | $(wall "$BIN" report store-bench --db "$db" --format json) s |"
  echo "| \`cifar-sweep status store-bench\` (median of 3) | $(wall "$BIN" status store-bench --db "$db") s |"
}

echo "## store_bench: $TRIALS trials x $EPOCHS epochs, $WORKERS workers ($(date -u +'%F %H:%M UTC'), $(nproc) cores)"
echo
echo "### SQLite"
echo
DB=/dev/shm/store-bench-$$.db
rm -f "$DB" "$DB"-wal "$DB"-shm
"$BENCH" --db "$DB" --trials "$TRIALS" --epochs "$EPOCHS" --workers "$WORKERS"
readers "$DB"
echo "| database size | $(du -h "$DB" | cut -f1) |"
rm -f "$DB" "$DB"-wal "$DB"-shm

echo
echo "### PostgreSQL"
echo
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
DIR=$(mktemp -d /tmp/store-bench-pg-XXXXXX)
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres: "$DIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
stop() { as_owner "$PGBIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap stop EXIT
as_owner "$PGBIN/initdb" -D "$DIR/data" -U cifar --auth=trust --no-sync >/dev/null
as_owner "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
  -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" start >/dev/null
"$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U cifar sweep
URL="postgres://cifar@127.0.0.1:$PORT/sweep"
echo "$("$PGBIN/postgres" --version)"
echo
"$BENCH" --db "$URL" --trials "$TRIALS" --epochs "$EPOCHS" --workers "$WORKERS"
readers "$URL"
echo "| database size | $("$PGBIN/psql" -X -q -t -A -c "SELECT pg_size_pretty(pg_database_size('sweep'))" "$URL") |"
