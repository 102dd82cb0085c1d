#!/usr/bin/env bash
# HTTP throughput of the order API on PostgreSQL + Redis with wrk at 32 connections:
# `place` (fresh keys), `pay` (fresh, one per placed order), and `pay` replays (the same
# keys again). Everything runs on 127.0.0.1 and stops by itself (10 s + 5 s + 5 s).
#   cargo build --release -p ordo-server && xtask/load/measure.sh
# Needs wrk (apt-get install wrk), a PostgreSQL on 127.0.0.1:5432 (trust) and Redis on :6379.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
server="$here/../../target/release/ordo-server"
port=${ORDO_LOAD_PORT:-18181}
db=ordo_load_$$
export ORDO_LOAD_DIR=$(mktemp -d)
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db"
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$db REDIS_URL=redis://127.0.0.1:6379 ORDO_REDIS_PREFIX="load-$$:" \
    ORDO_RATE_PER_S=1000000 ORDO_RATE_BURST=1000000 ORDO_POOL_SIZE=32 ORDO_LOG=warn
"$server" --listen "127.0.0.1:$port" 2>"$ORDO_LOAD_DIR/server.log" &
pid=$!
trap 'kill $pid; sleep 1; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"; rm -rf "$ORDO_LOAD_DIR"' EXIT
for _ in $(seq 0 40); do curl -s "localhost:$port/healthz" >/dev/null && break; sleep 0.25; done
for i in $(seq 0 31); do
    curl -s -o /dev/null -XPOST "localhost:$port/inventory/sku-$i/restock" -H "Idempotency-Key: s$i" -H 'content-type: application/json' -d '{"quantity":100000000}'
    curl -s -o /dev/null -XPOST "localhost:$port/wallet/acct-$i/deposit" -H "Idempotency-Key: w$i" -H 'content-type: application/json' -d '{"amount":100000000000}'
done
url="http://127.0.0.1:$port"
echo "== place (fresh)";  wrk -t2 -c32 -d10s -s "$here/place.lua" "$url" | grep -E "Requests/sec|Latency|Non-2xx"
echo "orders: $(cat "$ORDO_LOAD_DIR"/ids-*.txt | wc -l)"
echo "== pay (fresh)";    wrk -t2 -c32 -d5s -s "$here/pay.lua" "$url" | grep -E "Requests/sec|Latency|Non-2xx"
echo "== pay (replays of the first 1500 paid orders per thread)"
wrk -t2 -c32 -d5s -s "$here/pay.lua" "$url" -- 1500 | grep -E "Requests/sec|Latency|Non-2xx"
echo "paid: $(psql -h 127.0.0.1 -U postgres -d "$db" -tAc "select count(*) from orders where state = 'paid'")"
