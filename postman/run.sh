#!/usr/bin/env bash
# Runs the Postman collection with newman against a fresh server in echo mode, then stops it.
# Needs `npm ci` first (newman is pinned in package.json). Exits non-zero if any assertion fails.
set -euo pipefail
cd "$(dirname "$0")/.."

data=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Blank keys: echo mode, whatever a developer's .env says.
OPENAI_API_KEY= OPENAI_BASE_URL= SUPABASE_URL= SUPABASE_SERVICE_KEY= CHATKIT_WORKFLOW_ID= \
  DATABASE_URL="sqlite:///$data/townhall.db" OUTBOX_PATH="$data/outbox.db" TRACING=off \
  uv run uvicorn api:app --host 127.0.0.1 --port "$port" >"$data/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"' EXIT

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$data/server.log"; exit 1; }
  sleep 0.2
done

npx newman run postman/digital-town-hall.postman_collection.json \
  -e postman/digital-town-hall.postman_environment.json \
  --env-var "baseUrl=http://127.0.0.1:$port" \
  --timeout-request 15000 --timeout 120000 --color off
