#!/usr/bin/env bash
# Two containerd 1.6 hosts on one Cairn cluster, release build, everything on loopback:
# a 3-node cluster (R=3, W=2), a `cairn agent` per host, a private containerd per host with
# the agent as its proxy content store. Times `ctr images import` of an OCI tarball (one
# 256 MiB layer and a few small ones; SIZE_MB to change) on host A, then on host B (which
# sends no byte: its agent only claims), then `ctr images export` on each, and checks that
# both exports are identical. Needs root (containerd), python3.
# Usage: scripts/bench-containerd.sh [OUTDIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$(mktemp -d /tmp/cairn-bench-containerd.XXXXXX)}
SIZE_MB=${SIZE_MB:-256}
START_CONTAINERD=${START_CONTAINERD:-$ROOT/../shared/conformance/start-containerd.sh}
mkdir -p "$OUT"
NAME=containerd
# shellcheck source=scripts/bench-cluster-lib.sh
. "$ROOT/scripts/bench-cluster-lib.sh"
before_cleanup() {
  for h in a b; do [ -f "$WORK/ctr-$h/containerd.pid" ] && kill "$(cat "$WORK/ctr-$h/containerd.pid")" 2>/dev/null || true; done
}
start_cluster 3 7810

for h in a b; do
  cluster=127.0.0.1:7811,127.0.0.1:7812,127.0.0.1:7813
  [ "$h" = b ] && cluster=127.0.0.1:7812,127.0.0.1:7813,127.0.0.1:7811
  "$CAIRN" agent --unix "$WORK/agent-$h.sock" --data "$WORK/agent-$h" --client "host-$h" --cluster "$cluster" \
    > "$WORK/agent-$h.out" 2> "$OUT/agent-$h.log" &
  pids+=($!)
  until grep -q '^cairn agent: client' "$WORK/agent-$h.out" 2>/dev/null; do sleep 0.1; done
  "$START_CONTAINERD" "$WORK/ctr-$h" "$WORK/agent-$h.sock" > /dev/null
done

python3 - "$WORK/img.tar" "$SIZE_MB" <<'PY'
import tarfile, io, json, hashlib, os, sys
def blob(d): return "sha256:" + hashlib.sha256(d).hexdigest()
def layer(n, i):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w") as t:
        data = os.urandom(n); ti = tarfile.TarInfo(f"file{i}"); ti.size = n; t.addfile(ti, io.BytesIO(data))
    return b.getvalue()
layers = [layer(int(sys.argv[2]) << 20, 0), layer(4 << 20, 1), layer(4096, 2)]
config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [blob(l) for l in layers]}}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(config), "size": len(config)},
  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob(l), "size": len(l)} for l in layers]}).encode()
index = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
  "digest": blob(manifest), "size": len(manifest), "annotations": {"io.containerd.image.name": "cairn.bench/img:1"}}]}).encode()
with tarfile.open(sys.argv[1], "w") as t:
    def add(name, d): ti = tarfile.TarInfo(name); ti.size = len(d); t.addfile(ti, io.BytesIO(d))
    add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'); add("index.json", index)
    for d in [config, manifest] + layers: add("blobs/sha256/" + blob(d)[7:], d)
PY

timed() { # LABEL CMD...
  local t0 t1; t0=$(date +%s.%N); "${@:2}" > /dev/null; t1=$(date +%s.%N)
  python3 -c "print('| $1 | %.2f |' % ($t1 - $t0))"
}
ctr_a() { ctr --address "$WORK/ctr-a/containerd.sock" "$@"; }
ctr_b() { ctr --address "$WORK/ctr-b/containerd.sock" "$@"; }
{
  echo "| ${SIZE_MB} MiB + 4 MiB + 4 KiB image, release | seconds |"
  echo "|---|---:|"
  timed "host A: ctr images import (uploads to the cluster)" ctr_a images import --no-unpack --all-platforms "$WORK/img.tar"
  timed "host B: ctr images import (same tarball: claims only)" ctr_b images import --no-unpack --all-platforms "$WORK/img.tar"
  timed "host A: ctr images export (agent cache)" ctr_a images export "$WORK/a.tar" cairn.bench/img:1
  timed "host B: ctr images export (agent cache)" ctr_b images export "$WORK/b.tar" cairn.bench/img:1
} | tee "$OUT/containerd.md"
cmp "$WORK/a.tar" "$WORK/b.tar" && echo "exports identical" | tee -a "$OUT/containerd.md"
echo "host B's agent: $(grep -c 'claimed' "$OUT/agent-b.log") blobs claimed without sending a byte; uploaded: $(grep 'published sha256' "$OUT/agent-b.log" | sed 's/.*published \(sha256:.\{12\}\).*: \([0-9]*\) bytes.*/\1… \2 bytes/' | paste -sd, - || true)" | tee -a "$OUT/containerd.md"
