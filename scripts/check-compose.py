#!/usr/bin/env python3
"""Parses a compose file (YAML, anchors and merge keys resolved) and checks what
`docker compose config` would reject or what would break a Cairn cluster: every service has
an image or a build whose Dockerfile exists, ports and volumes are well formed, named
volumes are declared, every peer in CAIRN_PEERS is a service, node ids are unique."""
import os
import re
import sys

import yaml

path = sys.argv[1]
with open(path) as f:
    doc = yaml.safe_load(f)
base = os.path.dirname(os.path.abspath(path))
problems = []
services = doc.get("services") or {}
if not services:
    problems.append("no services")
declared = set((doc.get("volumes") or {}).keys())
ids = {}
for name, s in services.items():
    if "image" not in s and "build" not in s:
        problems.append(f"{name}: neither image nor build")
    build = s.get("build")
    if isinstance(build, dict):
        dockerfile = os.path.join(base, build.get("context", "."), build.get("dockerfile", "Dockerfile"))
        if not os.path.exists(dockerfile):
            problems.append(f"{name}: build dockerfile {dockerfile} does not exist")
    for p in s.get("ports", []):
        if not re.fullmatch(r"(\d+\.\d+\.\d+\.\d+:)?\d+(:\d+)?(/(tcp|udp))?", str(p)):
            problems.append(f"{name}: port {p!r} is not [IP:]HOST:CONTAINER")
    for v in s.get("volumes", []):
        source = str(v).split(":")[0]
        if not source.startswith((".", "/")) and source not in declared:
            problems.append(f"{name}: volume {source} is not declared under volumes")
    env = s.get("environment") or {}
    if isinstance(env, dict):
        node = env.get("CAIRN_NODE_ID")
        if node:
            if node in ids:
                problems.append(f"{name}: node id {node} also used by {ids[node]}")
            ids[node] = name
        for peer in str(env.get("CAIRN_PEERS", "")).split(","):
            if not peer:
                continue
            host = peer.split("=", 1)[-1].rsplit(":", 1)[0]
            if host not in services:
                problems.append(f"{name}: peer address {peer} names no service")
if problems:
    print("\n".join(f"{path}: {p}" for p in problems))
    sys.exit(1)
print(f"  ok: {path} parses; {len(services)} services, {len(ids)} node ids, peers and volumes consistent")
