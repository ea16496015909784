#!/usr/bin/env python3
"""Checks that the rendered deploy/kubernetes manifests and the Secrets `cairn certs init
--kubernetes` writes fit together: every Secret the StatefulSet mounts exists, and every
file a pod is told to use (its own peer certificate and key by pod name, the CA, the tokens
file) is a key of the Secret mounted where the path points.

  scripts/check-k8s-secrets.py RENDERED.yaml SECRETS.yaml"""
import re
import sys

import yaml

rendered = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
secrets = {d["metadata"]["name"]: set((d.get("stringData") or {}).keys()) for d in yaml.safe_load_all(open(sys.argv[2])) if d}
problems = []
sts = next(d for d in rendered if d["kind"] == "StatefulSet")
config = next(d for d in rendered if d["kind"] == "ConfigMap")
toml = config["data"]["cairn.toml"]
pod = sts["spec"]["template"]["spec"]
container = pod["containers"][0]
mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
# mount path -> the Secret's keys
files = {}
for v in pod.get("volumes", []):
    if "secret" in v:
        name = v["secret"]["secretName"]
        if name not in secrets:
            problems.append(f"the StatefulSet mounts Secret {name}, which cairn certs init does not write")
            continue
        files[mounts.get(v["name"], "?")] = secrets[name]


def provided(path, what):
    directory, _, file = path.rpartition("/")
    if file not in files.get(directory, set()):
        problems.append(f"{what} {path}: no Secret mounted at {directory} has {file}")


pods = [f"{sts['metadata']['name']}-{i}" for i in range(sts["spec"]["replicas"])]
env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
for key in ("CAIRN_TLS_CERT", "CAIRN_TLS_KEY"):
    if key not in env:
        problems.append(f"the pods get no {key}")
        continue
    for p in pods:
        provided(env[key].replace("$(POD_NAME)", p), f"{p}'s {key}")
for key in ("tls_ca", "tokens_file"):
    m = re.search(rf'^{key} = "([^"]+)"', toml, re.M)
    if not m:
        problems.append(f"cairn.toml sets no {key}")
    else:
        provided(m.group(1), key)
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"  ok: the StatefulSet's Secrets and files ({len(pods)} pods' certificates, CA, tokens) are what cairn certs init writes")
