#!/usr/bin/env bash
# The write path beside the PostgreSQL peer, back to back on this machine: the peer's
# transfer TPS (../shared/peers/pg-bench, pgbench -c 8, synchronous commit), then
# tollbook's HTTP fund moves and payments (api/bench/run.sh) at 1, 10, 100 and 1,000
# books. Needs PostgreSQL's binaries (apt-get install postgresql) and wrk.
#
#   api/bench/vs_postgres.sh                  # 20 s per run
#   DURATION=30s PEER_SECONDS=30 api/bench/vs_postgres.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
peers=${PEERS:-../shared/peers/pg-bench}
seconds=${PEER_SECONDS:-20}
export DURATION=${DURATION:-20s}

sh "$peers/start.sh" >/dev/null
trap 'sh "$peers/stop.sh" >/dev/null 2>&1 || true' EXIT
psql -h /tmp -p 55432 -U postgres -q -f "$peers/setup.sql" >/dev/null
peer=$(cd "$peers" && pgbench -h /tmp -p 55432 -U postgres -n -c 8 -j 2 -T "$seconds" -f transfer.sql postgres 2>/dev/null |
  sed -n 's/^tps = \([0-9.]*\).*/\1/p')
sh "$peers/stop.sh" >/dev/null
trap - EXIT
echo "PostgreSQL peer, transfer: $peer TPS (pgbench -c 8 -j 2, ${seconds} s)"

# books customers connections: enough connections that every book has a writer at 1,000.
for setting in "1 100 64" "10 10 64" "100 2 64" "1000 1 256"; do
  set -- $setting
  for scenario in transfer payment; do
    report=$(BOOKS=$1 CUSTOMERS=$2 CONNECTIONS=$3 api/bench/run.sh "$scenario")
    rate=$(sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p' <<<"$report")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$report")
    echo "$1 books x $2 customers, $3 connections, $scenario: $rate/s (p99 $p99), $(awk -v r="$rate" -v p="$peer" 'BEGIN { printf "%.1f", r / p }')x the peer"
  done
done
