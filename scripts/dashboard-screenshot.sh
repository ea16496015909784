#!/usr/bin/env bash
# Starts a 3-node demo cluster with admin ports, puts load on it, and takes a screenshot of
# node n1's dashboard with headless Chromium: docs/images/dashboard.png.
#
#   scripts/dashboard-screenshot.sh [OUT.png]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/docs/images/dashboard.png}
CAIRN=${CAIRN_BIN:-$ROOT/.build/debug/cairn}
BROWSER=$(command -v chromium || command -v chromium-browser || command -v google-chrome)
DIR=$(mktemp -d /tmp/cairn-dashboard.XXXXXX)
PEERS="n1=127.0.0.1:7701,n2=127.0.0.1:7702,n3=127.0.0.1:7703"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
for i in 1 2 3; do
  "$CAIRN" serve --data "$DIR/n$i" --listen 127.0.0.1:770$i --admin-listen 127.0.0.1:771$i \
    --node-id n$i --peers "$PEERS" >"$DIR/n$i.out" 2>"$DIR/n$i.log" &
  pids+=($!)
done
echo "waiting for n1 to be ready..."
until curl -sf http://127.0.0.1:7711/readyz >/dev/null; do sleep 0.2; done
echo "loading: uploads through every node..."
for i in 1 2 3; do
  "$CAIRN" bench --address 127.0.0.1:770$i --count 4000 --size 256k --concurrency 4 --keep >/dev/null 2>&1 &
  pids+=($!)
done
sleep 40
# Forty seconds of load first: each node reports its own throughput history.
"$BROWSER" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,950 \
  --virtual-time-budget=3000 --screenshot="$OUT" http://127.0.0.1:7711/ 2>/dev/null
echo "wrote $OUT"
