# Sourced by the cluster benchmarks: scratch directory, release build, and nodes on
# loopback that are stopped however the script ends. Set NAME before sourcing.
WORK=$(mktemp -d "${CAIRN_BENCH_DIR:-/var/tmp}/cairn-bench-$NAME.XXXXXX")
pids=()
before_cleanup() { :; }
cleanup() {
  before_cleanup
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building (release)"
(cd "$ROOT" && swift build -c release --product cairn >/dev/null)
CAIRN="$ROOT/.build/release/cairn"

# start_cluster N BASEPORT ARGS...: nodes n1..nN on 127.0.0.1:BASEPORT+i, ready on return.
start_cluster() {
  local n=$1 base=$2; shift 2
  local peers
  peers=$(for i in $(seq "$n"); do printf 'n%d=127.0.0.1:%d,' "$i" $((base + i)); done)
  for i in $(seq "$n"); do
    "$CAIRN" serve --node-id "n$i" --peers "${peers%,}" --data "$WORK/n$i" --listen "127.0.0.1:$((base + i))" "$@" \
      > "$WORK/n$i.out" 2> "$WORK/n$i.err" &
    pids+=($!)
  done
  for i in $(seq "$n"); do until grep -q '^cairn: data in' "$WORK/n$i.out" 2>/dev/null; do sleep 0.1; done; done
  for i in $(seq "$n"); do
    until "$CAIRN" cluster status --json --address "127.0.0.1:$((base + i))" 2>/dev/null | N="$n" python3 -c '
import json, os, sys
s = json.load(sys.stdin)
sys.exit(0 if len(s["members"]) == int(os.environ["N"]) and all(m.get("connected") for m in s["members"]) else 1)'; do sleep 0.2; done
  done
}
