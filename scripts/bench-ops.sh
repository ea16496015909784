#!/usr/bin/env bash
# What the operations layer costs: `cairn bench` against one node over its unix socket (as
# scripts/bench-compare.sh), over plaintext TCP, and over TLS with a bearer token (the
# token checked on every call; TLS 1.3, ECDSA P-256). Prints a Markdown table.
#
#   scripts/bench-ops.sh [CAIRN_BINARY]      (a release build: swift build -c release)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CAIRN=$(realpath "${1:-$ROOT/.build/release/cairn}")
WORK=$(mktemp -d "${CAIRN_BENCH_DIR:-/var/tmp}/cairn-bench-ops.XXXXXX")
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
tls=0
if "$CAIRN" serve --help 2>&1 | grep -q -- --tls-cert; then
  tls=1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=ca -keyout ca.key -out ca.pem 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=node -keyout node.key -out node.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' > node.ext
  openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile node.ext -out node.pem 2>/dev/null
  "$CAIRN" token new bench --permissions read,write,delete > token.txt
  awk '/^tokens_file line:/ {print $3, $4, $5}' token.txt > tokens
  TOKEN=$(awk '/^token:/ {print $2}' token.txt)
fi

start() {  # extra serve args...
  rm -rf data
  "$CAIRN" serve --data data --listen 127.0.0.1:7690 --unix "$WORK/cairn.sock" "$@" > out 2> err &
  PID=$!
  until grep -q '^cairn: data in' out 2>/dev/null; do kill -0 "$PID" 2>/dev/null || { cat err; exit 1; }; sleep 0.1; done
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
bench() {  # label args...
  local label=$1; shift
  "$CAIRN" bench "$@" 2>/dev/null | awk -v l="$label" '$1 == "write" || $1 == "read" { printf "| %s | %s | %s | %s | %s / %s |\n", l, $1, $3, $4, $5, $7 }'
}

echo "| run | phase | MiB/s | blobs/s | p50 / p99 ms |"
echo "|---|---|---:|---:|---:|"
start
for a in "unix://$WORK/cairn.sock" 127.0.0.1:7690; do
  bench "$a 4 KiB × 2000, c1" --address "$a" --size 4k --count 2000 --read
  bench "$a 4 KiB × 4000, c8" --address "$a" --size 4k --count 4000 --concurrency 8 --read
  bench "$a 1 GiB × 3" --address "$a" --size 1g --count 3 --read
done
stop
if [ $tls = 1 ]; then
  start --tls-cert node.pem --tls-key node.key --tokens-file tokens
  export CAIRN_TLS_CA=$WORK/ca.pem CAIRN_TOKEN=$TOKEN
  bench "TLS+token 4 KiB × 2000, c1" --address 127.0.0.1:7690 --size 4k --count 2000 --read
  bench "TLS+token 4 KiB × 4000, c8" --address 127.0.0.1:7690 --size 4k --count 4000 --concurrency 8 --read
  bench "TLS+token 1 GiB × 3" --address 127.0.0.1:7690 --size 1g --count 3 --read
  stop
fi
