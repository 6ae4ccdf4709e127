#!/usr/bin/env bash
# Serve the cloud halves of OUT on 127.0.0.1, run one request through the edge client, stop the server.
#   bash examples/splitdemo/serve_and_run.sh .venv/bin out/
set -euo pipefail
BIN=${1:-.venv/bin}
OUT=${2:-out}
PORT=$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/splitc" serve "$OUT" --host 127.0.0.1 --port "$PORT" --threads 1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if "$BIN/python" -c "import httpx, sys; sys.exit(httpx.get('http://127.0.0.1:$PORT/healthz').status_code != 200)" \
      2>/dev/null; then
    break
  fi
  sleep 0.2
done
"$BIN/splitc" run "$OUT" --input examples/splitdemo/sample.npy --cloud "http://127.0.0.1:$PORT"
