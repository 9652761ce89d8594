#!/usr/bin/env bash
# HTTP load test of the release binary with wrk: single writes (payments, fund moves)
# and account-details reads. Starts its own server on a loopback port with a fresh data
# directory, makes BOOKS partners with CUSTOMERS customers each, runs each scenario for
# DURATION with CONNECTIONS connections, stops the server. Needs `wrk` (apt-get install wrk).
#
#   api/bench/run.sh                       # all scenarios
#   CONNECTIONS=128 DURATION=30s api/bench/run.sh payment
#
# With RATE set, the writes are offered at that constant rate by `oha` (cargo install
# oha) instead of as fast as wrk can, with its latency correction, and the report gives
# p50/p99/p99.9 of every request:
#   RATE=10000 BOOKS=100 CUSTOMERS=2 api/bench/run.sh payment
set -euo pipefail
cd "$(dirname "$0")/../.."
here=api/bench
bin=${BIN:-target/release/tollbook}
export ADMIN_KEY=${ADMIN_KEY:-bench-key} BOOKS=${BOOKS:-10} CUSTOMERS=${CUSTOMERS:-10}
connections=${CONNECTIONS:-64}
duration=${DURATION:-15s}
threads=${THREADS:-1}
scenarios=${*:-payment transfer read}

[ -x "$bin" ] || cargo build --release -p tollbook
data=$(mktemp -d)
out=$(mktemp)
TOLLBOOK_LOG=${TOLLBOOK_LOG:-warn} "$bin" serve --data "$data" --listen 127.0.0.1:0 --admin-key "$ADMIN_KEY" ${SERVE_ARGS:-} >"$out" &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$data" "$out"' EXIT
for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.1; done
base=$(sed -n 's/^tollbook listening on //p' "$out")
post() { curl -sf -o /dev/null -H "Authorization: Bearer $ADMIN_KEY" "$base$1" "${@:2}"; }
for ((b = 0; b < BOOKS; b++)); do
  post /api/v1/accounts -d number=P$b -d name=P$b -d kind=partner -d currency=EUR
  post /api/v1/payments -d account=P$b -d amount=100000000
  for ((c = 0; c < CUSTOMERS; c++)); do
    post /api/v1/accounts -d number=C$b-$c -d name=C$b-$c -d kind=customer -d partner=P$b -d currency=EUR
  done
done
echo "server $base: $BOOKS books x $CUSTOMERS customers; wrk -t$threads -c$connections -d$duration"
for scenario in $scenarios; do
  case $scenario in
    payment | transfer) script=$here/write.lua ;;
    read) script=$here/read.lua ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
  esac
  echo "== $scenario"
  if [[ -n ${RATE:-} && $scenario != read ]]; then
    # One body per line, spread over every book's customers as write.lua does.
    bodies=$(mktemp)
    for ((n = 0; n < BOOKS * CUSTOMERS; n++)); do
      b=$((n % BOOKS)) c=$((n / BOOKS % CUSTOMERS))
      if [[ $scenario == transfer ]]; then
        echo "{\"from\":\"P$b\",\"to\":\"C$b-$c\",\"amount\":\"0.01\"}"
      else
        echo "{\"account\":\"C$b-$c\",\"amount\":\"0.01\",\"reference\":\"bench\"}"
      fi
    done >"$bodies"
    path=/api/v1/payments
    [[ $scenario == transfer ]] && path=/api/v1/transfers
    oha --no-tui -z "$duration" -q "$RATE" --latency-correction -c "$connections" -m POST \
      -H "Authorization: Bearer $ADMIN_KEY" -H "Content-Type: application/json" -Z "$bodies" "$base$path" |
      grep -E "Success rate|Requests/sec|Slowest|Average|50.00%|99.00%|99.90%|\[[0-9]+\]"
    rm -f "$bodies"
    continue
  fi
  report=$(KIND=$scenario wrk -t"$threads" -c"$connections" -d"$duration" --latency -s "$script" "$base")
  echo "$report"
  if grep -q "Non-2xx or 3xx responses" <<<"$report"; then
    echo "$scenario: some answers were not 2xx" >&2
    exit 1
  fi
done
