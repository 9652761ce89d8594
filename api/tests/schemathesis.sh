#!/usr/bin/env bash
# Fuzzes every operation of the OpenAPI document the real binary serves with Schemathesis,
# and fails on any server error (5xx), any answer whose body does not match the documented
# schema, and any status the operation does not document. Usage:
#   api/tests/schemathesis.sh [path/to/tollbook]
# Needs `schemathesis` on PATH (scripts/test installs the pinned version into target/pyenv).
#
# The server runs on a fresh data directory on a loopback port with a few seeded accounts,
# so that path parameters like `{number}` (whose documented examples are the seeded
# accounts) reach real data, not only 404s. Nothing leaves the machine: Schemathesis talks
# to the loopback server only, and the server's outgoing HTTP (webhook deliveries to
# whatever URLs the fuzzer registers) goes through a proxy on a closed loopback port.
set -euo pipefail
cd "$(dirname "$0")/../.."
binary="${1:-target/debug/tollbook}"
command -v schemathesis >/dev/null || { echo "schemathesis is not installed (scripts/test installs it)" >&2; exit 1; }

# Test cases per operation, and the seed that makes a run repeatable: the whole run takes
# about two minutes on two cores.
examples_per_operation_max="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
seed="${SCHEMATHESIS_SEED:-14}"

work="$(mktemp -d)"
export TOLLBOOK_ADMIN_KEY="schemathesis-$RANDOM$RANDOM$RANDOM"
# Port 9 (discard) on loopback is closed: a delivery fails at once, nothing goes out.
HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 ALL_PROXY=http://127.0.0.1:9 NO_PROXY= \
  "$binary" serve --listen 127.0.0.1:0 --data "$work/db" >"$work/stdout" 2>"$work/stderr" &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
base=""
for _ in $(seq 1 300); do
  base="$(sed -n 's/^tollbook listening on //p' "$work/stdout" | head -n1)"
  [[ -n "$base" ]] && curl -fsS "$base/health/live" >/dev/null 2>&1 && break
  base=""
  sleep 0.1
done
[[ -n "$base" ]] || { echo "the server did not start" >&2; cat "$work/stderr" >&2; exit 1; }

# The credential goes in a header file, so it shows in no process's command line.
printf 'Authorization: Bearer %s\n' "$TOLLBOOK_ADMIN_KEY" >"$work/auth-header"
post() {
  curl -fsS -o /dev/null -X POST -H @"$work/auth-header" -H 'Content-Type: application/json' \
    --data "$2" "$base$1" || { echo "seeding failed: POST $1 $2" >&2; exit 1; }
}
# The accounts the document's examples name (P-100, C-1001), one with alert thresholds
# and one without (null), money on them, a CDR that was answered and one that was not
# (`answer` null), a user with an API token.
post /api/v1/accounts '{"number":"P-100","name":"Partner One","kind":"partner","currency":"EUR","credit_limit":"100"}'
post /api/v1/accounts '{"number":"C-1001","name":"Customer One Ltd","kind":"customer","partner":"P-100","currency":"EUR","credit_limit":"50"}'
post /api/v1/accounts '{"number":"C-1002","name":"Customer Two","kind":"customer","currency":"EUR"}'
post /api/v1/payments '{"account":"P-100","amount":"500"}'
post /api/v1/payments '{"account":"C-1001","amount":"25.50"}'
post /api/v1/transfers '{"from":"P-100","to":"C-1001","amount":"10"}'
post /api/v1/accounts/C-1002/alerts '{"balance_below":"5","call_cost_above":"1.5"}'
post /api/v1/cdrs '[{"id":"sw1-000123","account":"C-1001","caller":"4930111","callee":"4930123456","start":"2025-01-15T10:00:00Z","answer":"2025-01-15T10:00:05Z","end":"2025-01-15T10:02:05Z","cost":"0.12","partner_cost":"0.08"},{"id":"sw1-000124","account":"C-1001","callee":"4930123456","start":"2025-01-15T11:00:00Z","end":"2025-01-15T11:00:30Z","hangup_cause":"17","cost":"0"}]'
post /api/v1/users '{"login":"alice","password":"correct horse battery staple","role":"admin"}'

# Schemathesis reads the credential from the environment (`${…}` in its configuration).
cat >"$work/schemathesis.toml" <<'EOF'
headers = { Authorization = "Bearer ${TOLLBOOK_ADMIN_KEY}" }
EOF

# Operations that are not fuzzed, each with its reason; everything else is.
excluded=(
  # A WebSocket: its answer is the switch of protocols, which an HTTP fuzzer cannot follow.
  --exclude-operation-id stream_events
)

# From the temporary directory, where Schemathesis keeps its cache.
cd "$work"
schemathesis --config-file "$work/schemathesis.toml" run "$base/api/v1/openapi.json" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance \
  --max-examples "$examples_per_operation_max" \
  --seed "$seed" \
  --generation-database none \
  --workers 2 \
  --request-timeout 10 \
  --no-color \
  "${excluded[@]}"
