#!/usr/bin/env bash
# Cluster figures for docs/benchmarks.md, release build, everything on this machine:
#   - 1 GiB write with `cairn bench`: one node alone; a 4-node cluster (R=3, W=2) through
#     the ref's owner; the same cluster through a node that does not own the ref
#   - 1 GiB read with `cairn get`: through a node holding a replica (a local read) and
#     through the one node holding none (streamed from a replica)
# Each figure is the median of RUNS runs (default 3). All nodes share one fresh journaled
# ext4 (a loop device) when run as root.
# Usage: scripts/bench-cluster.sh [OUTDIR]; CLUSTER_ARGS adds `cairn serve` flags to every
# cluster node (e.g. CLUSTER_ARGS="--ingest-mirror-lag 0" to measure without ingest mirroring).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$(mktemp -d /tmp/cairn-bench-cluster.XXXXXX)}
RUNS=${RUNS:-3}
mkdir -p "$OUT"
WORK=$(mktemp -d "${CAIRN_BENCH_DIR:-/var/tmp}/cairn-bench-cluster.XXXXXX")
echo "results in $OUT, scratch in $WORK"

MOUNTED=
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "$MOUNTED" ] && umount "$WORK/fs" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/fs"
if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null; then
  truncate -s 24G "$WORK/fs.img"
  mkfs.ext4 -F -q "$WORK/fs.img"
  mount -o loop "$WORK/fs.img" "$WORK/fs"
  MOUNTED=1
fi

echo "== building (release)"
(cd "$ROOT" && swift build -c release --product cairn >/dev/null)
CAIRN="$ROOT/.build/release/cairn"

start() { # NAME ARGS...
  local name=$1; shift
  "$CAIRN" serve "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" &
  pids+=($!)
  until grep -q '^cairn: data in' "$WORK/$name.out" 2>/dev/null; do sleep 0.1; done
}
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
# Waits until the nodes' stores stop growing: a commit is acknowledged at W replicas and
# the remaining transfer runs afterwards; the next run must not share the CPU with it.
settle() {
  local last=-1 now
  while true; do
    now=$(du -sb "$WORK"/fs/n*/blobs 2>/dev/null | awk '{s+=$1} END {print s+0}')
    [ "$now" = "$last" ] && return
    last=$now
    sleep 2
  done
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
write_mib() { # ADDRESS PREFIX
  settle
  "$CAIRN" bench --address "$1" --size 1g --count 1 --ref-prefix "$2" --json 2>/dev/null \
    | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["write"]["mibPerSecond"],1))'
}
read_mib() { # ADDRESS DIGEST
  local t0 t1
  t0=$(date +%s.%N)
  "$CAIRN" get --address "$1" "$2" -o /dev/null 2>/dev/null
  t1=$(date +%s.%N)
  python3 -c "print(round(1024/($t1-$t0),1))"
}
# A ref prefix P whose ref P-0 is owned (or not, with "not") by NODE in ADDRESS's view.
prefix_for() { # ADDRESS NODE [not] TAG
  for k in $(seq 1000); do
    local p="$4-$k" owner
    owner=$("$CAIRN" cluster locate --address "$1" --ref "$p-0" | sed 's/.*owner //')
    if { [ "${3:-}" = not ] && [ "$owner" != "$2" ]; } || { [ "${3:-}" != not ] && [ "$owner" = "$2" ]; }; then
      echo "$p"; return
    fi
  done
}

echo "== one node"
start single --data "$WORK/fs/single" --listen 127.0.0.1:7600 --unix "$WORK/single.sock"
single=$(for i in $(seq "$RUNS"); do write_mib 127.0.0.1:7600 "single-$i"; done | tee "$OUT/single-write.txt" | median)
stop_all
rm -rf "$WORK/fs/single"

echo "== 4-node cluster, R=3, W=2"
PEERS="n1=127.0.0.1:7611,n2=127.0.0.1:7612,n3=127.0.0.1:7613,n4=127.0.0.1:7614"
for i in 1 2 3 4; do
  start "n$i" --node-id "n$i" --peers "$PEERS" --replicas 3 --write-quorum 2 --data "$WORK/fs/n$i" \
    --listen "127.0.0.1:761$i" ${CLUSTER_ARGS:-}
done
# Measure a settled cluster: every node alive and linked in every view.
for i in 1 2 3 4; do
  until "$CAIRN" cluster status --json --address "127.0.0.1:761$i" 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
ok = len(s["members"]) == 4 and all(m.get("connected") and m["state"].get("status", "ALIVE") == "ALIVE" for m in s["members"])
sys.exit(0 if ok else 1)'; do sleep 0.2; done
done
"$CAIRN" cluster status --address 127.0.0.1:7611 | tee "$OUT/cluster-status.txt"
owner=$(for i in $(seq "$RUNS"); do write_mib 127.0.0.1:7611 "$(prefix_for 127.0.0.1:7611 n1 is "own$i")"; done \
  | tee "$OUT/owner-write.txt" | median)
nonowner=$(for i in $(seq "$RUNS"); do write_mib 127.0.0.1:7611 "$(prefix_for 127.0.0.1:7611 n1 not "fwd$i")"; done \
  | tee "$OUT/nonowner-write.txt" | median)

head -c 1G /dev/urandom > "$WORK/fs/blob"
digest=$("$CAIRN" put --address 127.0.0.1:7611 "$WORK/fs/blob" 2>/dev/null | tail -1)
rm "$WORK/fs/blob"
settle
replicas=$("$CAIRN" cluster locate --address 127.0.0.1:7611 --digest "$digest" | sed 's/.*replicas //')
outsider=$(for n in n1 n2 n3 n4; do case " $replicas " in *" $n "*) ;; *) echo "$n";; esac; done | head -1)
replica=${replicas%% *}
port() { echo "761${1#n}"; }
read_mib "127.0.0.1:$(port "$replica")" "$digest" > /dev/null   # warm the page cache
direct=$(for i in $(seq "$RUNS"); do read_mib "127.0.0.1:$(port "$replica")" "$digest"; done | tee "$OUT/direct-read.txt" | median)
remote=$(for i in $(seq "$RUNS"); do read_mib "127.0.0.1:$(port "$outsider")" "$digest"; done | tee "$OUT/remote-read.txt" | median)
stop_all

pct() { python3 -c "print(round(100*$1/$2))"; }
cat > "$OUT/cluster.md" <<MD
| 1 GiB, median of $RUNS | MiB/s | vs baseline |
|---|---:|---:|
| write, one node | $single | 100% |
| write, 4-node cluster R=3 W=2, through the ref's owner | $owner | $(pct "$owner" "$single")% |
| write, same cluster, through a non-owner (forwarded) | $nonowner | $(pct "$nonowner" "$single")% |
| read through a replica ($replica, local disk) | $direct | 100% |
| read through the node with no replica ($outsider, streamed) | $remote | $(pct "$remote" "$direct")% |
MD
cat "$OUT/cluster.md"
