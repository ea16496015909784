#!/usr/bin/env python3
"""Parses a compose file (YAML, anchors and merge keys resolved; override files merged over
it as `docker compose -f A -f B` does for environments) and checks what `docker compose
config` would reject or what would break a Cairn cluster: every service has an image or a
build whose Dockerfile exists, ports and volumes are well formed, named volumes are
declared, every peer in CAIRN_PEERS is a service, node ids are unique; and that each node is
closed by default (its own peer certificate, the CA, mounted) unless CAIRN_INSECURE says
otherwise, with no certificate setting left over then."""
import os
import re
import sys

import yaml

path = sys.argv[1]
label = ""
with open(path) as f:
    doc = yaml.safe_load(f)
for override in sys.argv[2:]:
    with open(override) as f:
        extra = yaml.safe_load(f)
    for name, s in (extra.get("services") or {}).items():
        target = doc["services"][name]
        for key, value in s.items():
            if key == "environment":
                target["environment"] = {**(target.get("environment") or {}), **value}
            else:
                target[key] = value
    label = " + " + override
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
        if str(env.get("CAIRN_INSECURE", "")).lower() == "true":
            left = [k for k in ("CAIRN_TLS_CERT", "CAIRN_TLS_KEY", "CAIRN_TLS_CA", "CAIRN_TOKENS_FILE") if env.get(k)]
            if left:
                problems.append(f"{name}: insecure, but {', '.join(left)} still set")
        else:
            cert = str(env.get("CAIRN_TLS_CERT", ""))
            if node and not cert.endswith(f"/peer-{node}.pem"):
                problems.append(f"{name}: node {node} must present its own peer certificate (peer-{node}.pem), got {cert!r}")
            if not env.get("CAIRN_TLS_CA") or not env.get("CAIRN_TLS_KEY"):
                problems.append(f"{name}: closed by default needs CAIRN_TLS_CA and CAIRN_TLS_KEY")
            if not any(str(v).split(":")[1:2] == ["/etc/cairn/tls"] for v in s.get("volumes", [])):
                problems.append(f"{name}: nothing is mounted at /etc/cairn/tls")
        for peer in str(env.get("CAIRN_PEERS", "")).split(","):
            if not peer:
                continue
            host = peer.split("=", 1)[-1].rsplit(":", 1)[0]
            if host not in services:
                problems.append(f"{name}: peer address {peer} names no service")
if problems:
    print("\n".join(f"{path}{label}: {p}" for p in problems))
    sys.exit(1)
print(f"  ok: {path}{label} parses; {len(services)} services, {len(ids)} node ids, peers and volumes consistent")
