#!/usr/bin/env bash
# Reads right after a burst of writes, on a copy of the standard 1M set (made by
# `api/bench/dataset.sh` first, cached under target/dataset/): starts the release server
# on the copy, sends payments to every customer for a few seconds at full rate (PAY=0
# sends none), then times with one connection a CDR page of 100 rows for the first
# second, then 8 s each of a listing of 1,000 accounts, the CDR page again and a statement.
#
# The first second is apart because that is where reads stalled: a CDR page took 6-28 ms
# for 0.2 s after the burst, from 2 MiB pages cleared at first touch, until transparent
# huge pages were turned off (docs/benchmarks.md, "Reads right after a burst of writes").
#
#   api/bench/reads_after_writes.sh
#   PAY=0 BIN=target/release/tollbook api/bench/reads_after_writes.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
here=api/bench
bin=${BIN:-target/release/tollbook}
[ -n "${BIN:-}" ] || cargo build --release -p tollbook
set_dir=target/dataset/seed1-events1000000-100x100
[ -e "$set_dir/.complete" ] || { echo "no $set_dir: run api/bench/dataset.sh first" >&2; exit 2; }
work=$(mktemp -d)
cp -r "$set_dir" "$work/data"
key="bench-$RANDOM$RANDOM"
TOLLBOOK_ADMIN_KEY="$key" TOLLBOOK_LOG=error "$bin" serve --data "$work/data" --listen 127.0.0.1:0 >"$work/out" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 600); do
  base=$(sed -n 's/^tollbook listening on //p' "$work/out")
  [ -n "$base" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/health")" = 200 ] && break
  sleep 0.1
done
if [ "${PAY:-1}" = 1 ]; then
  echo "== payments, wrk -t1 -c16 -d${SECONDS_OF_WRITES:-5}s"
  ADMIN_KEY=$key KIND=payment NUMBERS=dataset BOOKS=100 CUSTOMERS=100 \
    wrk -t1 -c16 -d"${SECONDS_OF_WRITES:-5}s" -s "$here/write.lua" "$base" 2>&1 |
    grep -E "Requests/sec|Non-2xx|unexpected"
fi
read_for() { # NAME PATH [DURATION]
  echo "== $1"
  wrk -t1 -c1 -d"${3:-8s}" --latency -H "Authorization: Bearer $key" "$base$2" | grep -E "Latency  |50%|99%|Requests/sec|Non-2xx"
}
read_for "a CDR page of 100 rows, the first second" "/api/v1/accounts/C029-052/cdrs?limit=100" 1s
read_for "a listing of 1,000 accounts" "/api/v1/accounts?limit=1000"
read_for "the same CDR page, 8 s" "/api/v1/accounts/C029-052/cdrs?limit=100"
read_for "a statement" "/api/v1/accounts/C029-052/statement?from=2026-01-01T00:00:00Z&to=2026-07-01T00:00:00Z"
