#!/usr/bin/env bash
# The read side on the standard data set (`tollbook dataset`), with the release binary:
#   1. builds the binary; generates the set, or reuses the one cached under
#      target/dataset/ for the same seed and sizes (REGENERATE=1 makes it anew);
#   2. `tollbook replay` on it: events/s;
#   3. `tollbook serve` from start to `/health` 200, after a clean stop and after kill -9,
#      and after each the time of the first command to a cold book (a payment to a
#      partner whose book no command has touched since the start);
#   4. the server's RSS (from /proc) once the read models have caught up.
# Prints `uptime` first: figures taken while other work runs are not the machine's.
#
#   api/bench/dataset.sh                      # 1,000,000 events, the quick run
#   EVENTS=10000000 api/bench/dataset.sh      # the figures of docs/benchmarks.md
#   SEED=2 PARTNERS=10 CUSTOMERS=1000 api/bench/dataset.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${BIN:-target/release/tollbook}
EVENTS=${EVENTS:-1000000} SEED=${SEED:-1} PARTNERS=${PARTNERS:-100} CUSTOMERS=${CUSTOMERS:-100}
# Seconds a server may take to answer /health with 200.
START_TIMEOUT_S=${START_TIMEOUT_S:-600}

[ -n "${BIN:-}" ] || cargo build --release -p tollbook
echo "load: $(uptime)"
data=target/dataset/seed$SEED-events$EVENTS-${PARTNERS}x$CUSTOMERS
if [ -n "${REGENERATE:-}" ] || [ ! -e "$data/.complete" ]; then
  rm -rf "$data"
  mkdir -p "$(dirname "$data")"
  echo "== generating $EVENTS events, seed $SEED, $PARTNERS partners x $CUSTOMERS customers into $data"
  /usr/bin/time -f "generated in %e s, max RSS %M KiB" \
    "$bin" dataset --data "$data" --events "$EVENTS" --seed "$SEED" --partners "$PARTNERS" --customers "$CUSTOMERS"
  touch "$data/.complete"
else
  echo "== reusing $data"
fi
echo "event log: $(du -sh "$data/events" | cut -f1)"

echo "== replay"
/usr/bin/time -f "wall %e s, CPU %U s user + %S s system, max RSS %M KiB" "$bin" replay --data "$data"

work=$(mktemp -d)
server=
stop() { # SIGNAL: stops the running server with it and waits
  [ -n "$server" ] || return 0
  kill -"$1" "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=
}
trap 'stop KILL; rm -rf "$work"' EXIT
# Starts the server; sets `elapsed` to the seconds from launch to /health 200. Not in a
# subshell: it keeps the server's pid.
start() {
  local began out base
  out=$work/stdout
  began=$(date +%s.%N)
  key="bench-$RANDOM$RANDOM"
  TOLLBOOK_ADMIN_KEY="$key" TOLLBOOK_LOG=error "$bin" serve --data "$data" --listen 127.0.0.1:0 >"$out" &
  server=$!
  for _ in $(seq $((START_TIMEOUT_S * 50))); do grep -q listening "$out" && break; sleep 0.02; done
  base=$(sed -n 's/^tollbook listening on //p' "$out")
  [ -n "$base" ] || { echo "the server printed no address" >&2; exit 1; }
  echo "$base" >"$work/base"
  for _ in $(seq $((START_TIMEOUT_S * 50))); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/health")" = 200 ]; then
      elapsed=$(echo "$(date +%s.%N) $began" | awk '{printf "%.2f", $1 - $2}')
      return
    fi
    sleep 0.02
  done
  echo "no /health 200 within $START_TIMEOUT_S s" >&2
  exit 1
}
# The first command to a cold book: a payment to partner number $1 (P001, P002, ...: each
# run takes another partner, so that no earlier run's payment is in the way).
cold_book() {
  local base answer
  base=$(cat "$work/base")
  answer=$(curl -s -o "$work/cold" -w '%{http_code} %{time_total}' -X POST "$base/api/v1/payments" \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    -d "{\"account\":\"$1\",\"amount\":\"0.01\",\"reference\":\"cold book\"}")
  [ "${answer%% *}" = 201 ] || { echo "the payment to $1 answered ${answer%% *}: $(cat "$work/cold")" >&2; exit 1; }
  echo "first command to a cold book ($1): $(echo "${answer#* }" | awk '{printf "%.1f", $1 * 1000}') ms"
}
# Waits until the read models hold every event (lag 0), then prints the server's RSS.
rss_caught_up() {
  local began
  began=$(date +%s.%N)
  local base lag
  base=$(cat "$work/base")
  for _ in $(seq $((START_TIMEOUT_S * 10))); do
    lag=$(curl -s "$base/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["read_models_lag_events"])')
    [ "$lag" = 0 ] && break
    sleep 0.1
  done
  echo "read models caught up (lag 0) $(echo "$(date +%s.%N) $began" | awk '{printf "%.2f", $1 - $2}') s later; RSS:" \
    "$(awk '/^VmRSS|^VmHWM/ {printf "%s %.0f MiB  ", $1, $2 / 1024}' "/proc/$server/status")"
}

echo "== serve"
start
echo "first start (after replay): /health 200 after $elapsed s"
cold_book P001
rss_caught_up
stop TERM
start
echo "after a clean stop:         /health 200 after $elapsed s"
cold_book P002
rss_caught_up
stop KILL
start
echo "after kill -9:              /health 200 after $elapsed s"
cold_book P003
rss_caught_up
stop TERM
echo "load: $(uptime)"
