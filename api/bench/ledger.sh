# Sourced by the benchmarks that need a rated ledger (import.sh, import_master_csv.sh,
# freeswitch_rate.sh): starts the release server on a fresh data directory in $work, and
# sets up BOOKS partners with CUSTOMERS customers each through the API — a wholesale tariff
# on every partner, a retail one on every customer, both of PREFIXES prefixes (`49xxxx` in
# 1/1, 30/6 and 60/60 increments, and `4` as the fallback). With ACCOUNT_CODES=1 each
# customer C<b>-<c> also gets the switch account code `ac<b>-<c>`.
#
# Leaves the server running ($server, at $base); `stop_server` stops it. Everything in
# $work is removed on exit.
set -euo pipefail
bin=${BIN:-target/release/tollbook}
ADMIN_KEY=${ADMIN_KEY:-bench-key}
BOOKS=${BOOKS:-10} CUSTOMERS=${CUSTOMERS:-10} PREFIXES=${PREFIXES:-1000}

[ -x "$bin" ] || cargo build --release -p tollbook
work=$(mktemp -d)
data=$work/data
out=$work/stdout
TOLLBOOK_LOG=${TOLLBOOK_LOG:-warn} "$bin" serve --data "$data" --listen 127.0.0.1:0 --admin-key "$ADMIN_KEY" >"$out" &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.1; done
base=$(sed -n 's/^tollbook listening on //p' "$out")
api() { curl -sf -H "Authorization: Bearer $ADMIN_KEY" "$base$1" "${@:2}"; }
stop_server() { kill "$server"; wait "$server" 2>/dev/null || true; }
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
    if [[ ${ACCOUNT_CODES:-0} == 1 ]]; then
      # The switch's account code for the customer: a switch's CDRs find it by this.
      api /api/v1/accounts/C$b-$c/switch-identifiers -o /dev/null -d account_codes=ac$b-$c
    fi
  done
done
