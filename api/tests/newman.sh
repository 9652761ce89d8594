#!/usr/bin/env bash
# Runs the Postman collection (docs/tollbook.postman_collection.json) with newman against
# the real binary on a fresh data directory. Usage: api/tests/newman.sh [path/to/tollbook]
# (default: target/debug/tollbook, built first). Needs newman (`npm install -g newman`).
set -euo pipefail
cd "$(dirname "$0")/../.."

binary="${1:-}"
if [[ -z "$binary" ]]; then
  cargo build -p tollbook
  binary=target/debug/tollbook
fi
command -v newman >/dev/null || { echo "newman is not installed: npm install -g newman" >&2; exit 1; }

data="$(mktemp -d)"
out="$data/stdout"
# The key goes to the server in its environment and to newman in an environment file, so
# that it shows in no process's command line.
admin_key="newman-$RANDOM$RANDOM$RANDOM"
TOLLBOOK_ADMIN_KEY="$admin_key" "$binary" serve --listen 127.0.0.1:0 --data "$data/db" >"$out" 2>"$data/stderr" &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

# The server prints `tollbook listening on http://ADDR` once it is bound.
base=""
for _ in $(seq 1 300); do
  base="$(sed -n 's/^tollbook listening on //p' "$out" | head -n1)"
  [[ -n "$base" ]] && curl -fsS "$base/health" >/dev/null 2>&1 && break
  base=""
  sleep 0.2
done
if [[ -z "$base" ]]; then
  echo "the server did not start:" >&2
  cat "$data/stderr" >&2
  exit 1
fi

(umask 077 && cat >"$data/environment.json" <<EOF
{"name": "tollbook test", "values": [
  {"key": "baseUrl", "value": "$base", "enabled": true},
  {"key": "adminKey", "value": "$admin_key", "enabled": true}
]}
EOF
)
newman run docs/tollbook.postman_collection.json \
  --environment "$data/environment.json" \
  --bail \
  --color off
