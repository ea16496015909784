#!/usr/bin/env python3
"""Turns the files scripts/bench-compare.sh wrote into the markdown tables of docs/benchmarks.md."""
import json, re, sys, pathlib

out = pathlib.Path(sys.argv[1])

def gobench(name):
    text = (out / f"gobench-{name}.txt").read_text()
    def num(pattern):
        m = re.search(pattern, text)
        return float(m.group(1)) if m else float("nan")
    return {
        "big write MiB/s": num(r"big write .*?([\d.]+) MiB/s"),
        "big read 1MiB ReadAt+verify MiB/s": num(r"ReadAt\+verify: median \S+\s+([\d.]+) MiB/s"),
        "big read single stream MiB/s": num(r"single Read stream:\s+median \S+\s+([\d.]+) MiB/s"),
        "4 KiB seq blobs/s": num(r"small seq \d+ x \d+ KiB, concurrency 1: \S+\s+([\d.]+) blobs/s"),
        "4 KiB concurrency 8 blobs/s": num(r"small par \d+ x \d+ KiB, concurrency 8: \S+\s+([\d.]+) blobs/s"),
        "read-back Info+Read ms/blob": num(r"small seq read-back .*?: ([\d.]+) ms/blob"),
    }

def cb(name):
    return json.loads((out / f"{name}.json").read_text())

def ratio(a, b, higher_better=True):
    if b == 0 or a != a or b != b:
        return "–"
    return f"{(a / b if higher_better else b / a):.2f}×"

print("### containerd's client adaptor (conformance kit `bench`, one connection)\n")
print("| measure | Cairn | containerd 1.6 | Cairn / containerd |")
print("|---|---:|---:|---:|")
c, d = gobench("cairn"), gobench("containerd")
for k in c:
    better = not k.endswith("ms/blob")
    print(f"| {k} | {c[k]:.1f} | {d[k]:.1f} | {ratio(c[k], d[k], better)} |")

print("\n### `cairn bench` (pipelined client, one connection)\n")
print("| run | measure | Cairn | containerd 1.6 | Cairn / containerd |")
print("|---|---|---:|---:|---:|")
for run, label in [("1g", "1 GiB x 3"), ("4k-seq", "4 KiB x 2000, concurrency 1"), ("4k-c8", "4 KiB x 4000, concurrency 8")]:
    a, b = cb(f"cairn-{run}"), cb(f"containerd-{run}")
    for phase in ["write", "read"]:
        if not a.get(phase) or not b.get(phase):
            continue
        pa, pb = a[phase], b[phase]
        metric = "mibPerSecond" if run == "1g" else "blobsPerSecond"
        unit = "MiB/s" if run == "1g" else "blobs/s"
        print(f"| {label} | {phase} {unit} | {pa[metric]:.1f} | {pb[metric]:.1f} | {ratio(pa[metric], pb[metric])} |")
        print(f"| {label} | {phase} p50 / p99 ms | {pa['p50us']/1000:.2f} / {pa['p99us']/1000:.2f} | {pb['p50us']/1000:.2f} / {pb['p99us']/1000:.2f} | |")

print("\n### Memory while writing one 4 GiB blob\n")
rc = int((out / "cairn-4g-rss-kib.txt").read_text().split()[0])
rd = int((out / "containerd-4g-rss-kib.txt").read_text().split()[0])
a, b = cb("cairn-4g"), cb("containerd-4g")
print("| server | peak RSS (VmHWM) | write MiB/s |")
print("|---|---:|---:|")
print(f"| Cairn | {rc/1024:.0f} MiB | {a['write']['mibPerSecond']:.1f} |")
print(f"| containerd 1.6 (whole daemon, since start) | {rd/1024:.0f} MiB | {b['write']['mibPerSecond']:.1f} |")
