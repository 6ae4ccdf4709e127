#!/usr/bin/env bash
# Serve the cloud halves of OUT on 127.0.0.1 and run the edge client over two links: an emulated
# 2 Mbit/s uplink (`splitc netem`, where the mid-network split wins) and the loopback itself (where
# sending the image as a JPEG wins). The client measures the link and picks its plan; then both stop.
#   bash examples/splitdemo/serve_and_run.sh .venv/bin out/
set -euo pipefail
BIN=${1:-.venv/bin}
OUT=${2:-out}
free_port() { "$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() {
  for _ in $(seq 1 100); do
    if "$BIN/python" -c "import httpx, sys; sys.exit(httpx.get('$1/healthz').status_code != 200)" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  echo "error: nothing answers at $1" >&2
  return 1
}
PORT=$(free_port)
SLOW=$(free_port)
LOG=$(mktemp)
"$BIN/splitc" serve "$OUT" --host 127.0.0.1 --port "$PORT" --threads 1 >"$LOG" 2>&1 &
SERVER=$!
"$BIN/splitc" netem --listen "127.0.0.1:$SLOW" --to "127.0.0.1:$PORT" --bw 2Mbps --rtt 5ms >/dev/null 2>&1 &
PROXY=$!
trap 'kill "$PROXY" "$SERVER" 2>/dev/null || true; wait "$PROXY" "$SERVER" 2>/dev/null || true; rm -f "$LOG"' EXIT
wait_for "http://127.0.0.1:$PORT"
wait_for "http://127.0.0.1:$SLOW"
grep -v '^INFO:' "$LOG" || true
echo
echo "== over an emulated 2 Mbit/s uplink with 5 ms RTT (splitc netem):"
"$BIN/splitc" run "$OUT" --input examples/splitdemo/sample.npy --cloud "http://127.0.0.1:$SLOW" --repeat 5 --warmup 2
echo
echo "== over the loopback (no emulated limit):"
"$BIN/splitc" run "$OUT" --input examples/splitdemo/sample.npy --cloud "http://127.0.0.1:$PORT" --repeat 5 --warmup 2
