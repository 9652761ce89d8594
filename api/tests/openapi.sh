#!/usr/bin/env bash
# Validates the OpenAPI document the real binary serves with an independent validator
# (openapi-spec-validator, OpenAPI 3.1). Usage: api/tests/openapi.sh [path/to/tollbook]
set -euo pipefail
cd "$(dirname "$0")/../.."
binary="${1:-target/debug/tollbook}"
command -v openapi-spec-validator >/dev/null || { echo "openapi-spec-validator is not installed (scripts/test installs it into target/pyenv)" >&2; exit 1; }
work="$(mktemp -d)"
# `serve` needs an admin key; given in the environment, it shows in no command line.
TOLLBOOK_ADMIN_KEY="openapi-$RANDOM$RANDOM$RANDOM" \
  "$binary" serve --listen 127.0.0.1:0 --data "$work/db" >"$work/stdout" 2>"$work/stderr" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
base=""
for _ in $(seq 1 300); do
  base="$(sed -n 's/^tollbook listening on //p' "$work/stdout" | head -n1)"
  [[ -n "$base" ]] && break
  sleep 0.1
done
[[ -n "$base" ]] || { echo "the server did not start" >&2; cat "$work/stderr" >&2; exit 1; }
curl -sf "$base/api/v1/openapi.json" >"$work/openapi.json"
openapi-spec-validator "$work/openapi.json"
