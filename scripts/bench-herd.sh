#!/usr/bin/env bash
# The thundering herd of an image cache (issue: many hosts start the same layer at once):
# a 4-node cluster (R=3, W=2), one blob of SIZE (default 256m) written through n1, then
# `cairn herd` through the one node that holds no replica: one reader alone, then READERS
# (default 32) at once, each on its own connection, every reader verifying the digest.
# Reports time and the fetches from other nodes each phase started (remote fetches in
# `cairn cluster status`). Release build; scratch under /var/tmp.
# Usage: scripts/bench-herd.sh [OUTDIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$(mktemp -d /tmp/cairn-bench-herd.XXXXXX)}
SIZE=${SIZE:-256m}
READERS=${READERS:-32}
RUNS=${RUNS:-3}
mkdir -p "$OUT"
NAME=herd
# shellcheck source=scripts/bench-cluster-lib.sh
. "$ROOT/scripts/bench-cluster-lib.sh"
start_cluster 4 7710 --replicas 3 --write-quorum 2

"$CAIRN" bench --address 127.0.0.1:7711 --size "$SIZE" --count 1 --keep --json > "$WORK/put.json" 2>/dev/null
digest=$("$CAIRN" ls --address 127.0.0.1:7711 | awk 'NR==2 {print $1}')
replicas=$("$CAIRN" cluster locate --address 127.0.0.1:7711 --digest "$digest" | sed 's/.*replicas //')
outsider=$(for n in n1 n2 n3 n4; do case " $replicas " in *" $n "*) ;; *) echo "$n";; esac; done | head -1)
# Let the background copy to the third replica finish before measuring.
until [ "$(ls "$WORK"/n*/blobs/sha256/ 2>/dev/null | grep -c "${digest#sha256:}")" -ge 3 ]; do sleep 0.2; done
echo "blob $digest ($SIZE), replicas $replicas; herd through $outsider"
for r in $(seq "$RUNS"); do
  "$CAIRN" herd --address "127.0.0.1:771${outsider#n}" --readers "$READERS" --json "$digest" | tee -a "$OUT/herd.jsonl"
done
python3 - "$OUT/herd.jsonl" "$READERS" "$SIZE" > "$OUT/herd.md" <<'PY'
import json, sys, statistics
runs = [json.loads(l) for l in open(sys.argv[1])]
mib = runs[0]["bytes"] / 1048576
med = lambda k: statistics.median(r[k] for r in runs)
print(f"| {sys.argv[3]} blob through a node with no replica, median of {len(runs)} | seconds | MiB/s per reader | MiB/s delivered | fetches from replicas (each run) |")
print("|---|---:|---:|---:|---|")
print(f"| 1 reader | {med('singleSeconds'):.2f} | {mib/med('singleSeconds'):.0f} | {mib/med('singleSeconds'):.0f} | {', '.join(str(r['singleFetches']) for r in runs)} |")
print(f"| {sys.argv[2]} readers at once | {med('herdSeconds'):.2f} | {mib/med('slowestReaderSeconds'):.0f} | {mib*int(sys.argv[2])/med('herdSeconds'):.0f} | {', '.join(str(r['herdFetches']) for r in runs)} |")
PY
cat "$OUT/herd.md"
