#!/usr/bin/env bash
# End-to-end CSV import of CDRS CDRs (default 1,000,000) with the release binary: parse,
# rate with tariffs of PREFIXES prefixes (retail per partner, wholesale from the
# operator), append durably, project. Sets up BOOKS partners with CUSTOMERS customers
# each through the API, stops the server, generates the file, then times
# `tollbook import cdrs` (which waits for the read models to catch up before it ends).
#
#   api/bench/import.sh
#   CDRS=200000 BOOKS=4 api/bench/import.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${BIN:-target/release/tollbook}
ADMIN_KEY=bench-key
BOOKS=${BOOKS:-10} CUSTOMERS=${CUSTOMERS:-10} CDRS=${CDRS:-1000000} PREFIXES=${PREFIXES:-1000}

[ -x "$bin" ] || cargo build --release -p tollbook
work=$(mktemp -d)
data=$work/data
out=$work/stdout
TOLLBOOK_LOG=warn "$bin" serve --data "$data" --listen 127.0.0.1:0 --admin-key "$ADMIN_KEY" >"$out" &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.1; done
base=$(sed -n 's/^tollbook listening on //p' "$out")
api() { curl -sf -H "Authorization: Bearer $ADMIN_KEY" "$base$1" "${@:2}"; }
rates=$(python3 -c "
import sys
print('prefix,price_per_minute,first_increment_seconds,next_increment_seconds')
for i in range($PREFIXES):
    print(f'49{i:04d},0.0{i % 9 + 1},{(1, 30, 60)[i % 3]},{(1, 6, 60)[i % 3]}')
print('4,0.5,60,60')")
tariff() { api /api/v1/tariffs --data-urlencode "rates=$rates" -d name="$1" -d currency=EUR -d effective_from=2026-01-01 \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["links"]["tariff"].rsplit("/",1)[1])'; }
wholesale=$(tariff wholesale)
retail=$(tariff retail)
for ((b = 0; b < BOOKS; b++)); do
  api /api/v1/accounts -o /dev/null -d number=P$b -d name=P$b -d kind=partner -d currency=EUR
  api /api/v1/accounts/P$b/tariff -o /dev/null -d tariff="$wholesale"
  for ((c = 0; c < CUSTOMERS; c++)); do
    api /api/v1/accounts -o /dev/null -d number=C$b-$c -d name=C$b-$c -d kind=customer -d partner=P$b -d currency=EUR
    api /api/v1/accounts/C$b-$c/tariff -o /dev/null -d tariff="$retail"
  done
done
kill $server; wait $server 2>/dev/null || true
python3 - "$work/cdrs.csv" <<PY
import datetime, sys
books, customers, count, prefixes = $BOOKS, $CUSTOMERS, $CDRS, $PREFIXES
t0 = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)
with open(sys.argv[1], "w") as f:
    f.write("id,account,caller,callee,start,answer,end,hangup_cause\n")
    for i in range(count):
        start = t0 + datetime.timedelta(seconds=i * 2)
        s = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        account = f"C{i % books}-{(i // books) % customers}"
        if i % 5 == 0:
            end = (start + datetime.timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
            f.write(f"cdr-{i},{account},4940,49{i % prefixes:04d}{i % 1000:03d},{s},,{end},NO_ANSWER\n")
        else:
            answer = (start + datetime.timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
            end = (start + datetime.timedelta(seconds=3 + i % 600)).strftime("%Y-%m-%dT%H:%M:%SZ")
            f.write(f"cdr-{i},{account},4940,49{i % prefixes:04d}{i % 1000:03d},{s},{answer},{end},16\n")
PY
[ -n "${KEEP:-}" ] && cp -r "$data" "$KEEP/data" && cp "$work/cdrs.csv" "$KEEP/cdrs.csv"
echo "$CDRS CDRs ($(du -h "$work/cdrs.csv" | cut -f1)), $BOOKS books x $CUSTOMERS customers, $PREFIXES prefixes"
/usr/bin/time -f "wall %e s, max RSS %M KiB" "$bin" import cdrs "$work/cdrs.csv" --data "$data"
echo "== rerun (everything already in)"
/usr/bin/time -f "wall %e s, max RSS %M KiB" "$bin" import cdrs "$work/cdrs.csv" --data "$data"
