#!/usr/bin/env bash
# Measures Cairn against containerd 1.6 in the same sitting (docs/benchmarks.md):
#   - the conformance kit's Go benchmark (containerd's own client adaptor, one connection)
#   - `cairn bench`: 1 GiB write+read, 4 KiB blobs sequential and at concurrency 8
#   - peak RSS of the server while a 4 GiB blob is written
# Usage: scripts/bench-compare.sh [OUTDIR]   (needs root for containerd; ~10 minutes)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$(mktemp -d /tmp/cairn-bench.XXXXXX)}
KIT=${CAIRN_CONFORMANCE_DIR:-$ROOT/../shared/conformance}
mkdir -p "$OUT"
WORK=$(mktemp -d "${CAIRN_BENCH_DIR:-/var/tmp}/cairn-bench-work.XXXXXX")
echo "results in $OUT, scratch in $WORK"

# Each server gets a fresh, journaled ext4 of its own (a loop device) when we are root: the
# same conditions for both, and no interference between them (ext4 slows inode allocation
# for a while after many deletions, which the benchmarks make).
MOUNTS=()
fresh_fs() {
  mkdir -p "$1"
  if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null; then
    truncate -s 16G "$1.img"
    mkfs.ext4 -F -q "$1.img"
    mount -o loop "$1.img" "$1"
    MOUNTS+=("$1")
  fi
}

echo "== building (release)"
(cd "$ROOT" && swift build -c release --product cairn >/dev/null)
CAIRN="$ROOT/.build/release/cairn"
GOBENCH=$("$KIT/build-bench.sh" "$WORK/bin" | tail -1)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/ctrd/containerd.pid" ] && kill "$(cat "$WORK/ctrd/containerd.pid")" 2>/dev/null || true
  sleep 1
  for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

fresh_fs "$WORK/cairn"
start_cairn() {
  rm -rf "$WORK/cairn/data"
  "$CAIRN" serve --data "$WORK/cairn/data" --listen none --unix "$WORK/cairn/cairn.sock" > "$WORK/cairn/out" 2>&1 &
  CAIRN_PID=$!
  pids+=("$CAIRN_PID")
  until grep -q '^cairn: data in' "$WORK/cairn/out" 2>/dev/null; do sleep 0.1; done
}
stop_cairn() { kill "$CAIRN_PID"; wait "$CAIRN_PID" 2>/dev/null || true; }

echo "== starting containerd"
fresh_fs "$WORK/ctrd"
"$KIT/start-containerd.sh" "$WORK/ctrd" > "$OUT/containerd-start.txt"
CTRD_PID=$(cat "$WORK/ctrd/containerd.pid")
CTRD_SOCK="$WORK/ctrd/containerd.sock"

echo "== Go benchmark (containerd's content/proxy client)"
start_cairn
"$GOBENCH" -addr "$WORK/cairn/cairn.sock" -ns - > "$OUT/gobench-cairn.txt" 2>&1
stop_cairn
"$GOBENCH" -addr "$CTRD_SOCK" -ns bench > "$OUT/gobench-containerd.txt" 2>&1

run_cairn_bench() {  # name address extra-args...
  local name=$1 addr=$2; shift 2
  "$CAIRN" bench --address "$addr" --json "$@" > "$OUT/$name.json"
}
echo "== cairn bench"
for target in cairn containerd; do
  if [ $target = cairn ]; then start_cairn; ADDR="unix://$WORK/cairn/cairn.sock"; NS=(); else ADDR="unix://$CTRD_SOCK"; NS=(--namespace bench --gc-root-label); fi
  run_cairn_bench "$target-1g" "$ADDR" "${NS[@]}" --size 1g --count 3 --read
  run_cairn_bench "$target-4k-seq" "$ADDR" "${NS[@]}" --size 4k --count 2000 --concurrency 1 --read
  run_cairn_bench "$target-4k-c8" "$ADDR" "${NS[@]}" --size 4k --count 4000 --concurrency 8 --read
  [ $target = cairn ] && stop_cairn
done

echo "== peak RSS while writing one 4 GiB blob"
start_cairn
"$CAIRN" bench --address "unix://$WORK/cairn/cairn.sock" --size 4g --count 1 --json > "$OUT/cairn-4g.json"
grep VmHWM "/proc/$CAIRN_PID/status" | awk '{print $2}' > "$OUT/cairn-4g-rss-kib.txt"
stop_cairn
BEFORE=$(grep VmHWM "/proc/$CTRD_PID/status" | awk '{print $2}')
"$CAIRN" bench --address "unix://$CTRD_SOCK" --namespace bench --gc-root-label --size 4g --count 1 --json > "$OUT/containerd-4g.json"
grep VmHWM "/proc/$CTRD_PID/status" | awk '{print $2}' > "$OUT/containerd-4g-rss-kib.txt"
echo "containerd VmHWM before the 4 GiB write: $BEFORE KiB" >> "$OUT/containerd-4g-rss-kib.txt"

python3 "$ROOT/scripts/bench-report.py" "$OUT" | tee "$OUT/report.md"
