#!/usr/bin/env bash
# Validates deploy/ offline, as CI does:
#  - Kubernetes: `kubectl kustomize` renders both kustomizations, and every rendered object
#    matches the Kubernetes 1.31 schemas (kubernetes-validate, strict: no unknown fields);
#    the ConfigMap's cairn.toml passes `cairn config check`.
#  - Docker: the compose file parses and is consistent (scripts/check-compose.py); the
#    Dockerfile's stages and copied paths exist.
#  - systemd: `systemd-analyze verify` on the unit; its example config passes `cairn config check`.
#  - containerd: `containerd config dump` loads the snippet with the proxy plugin in it.
#
#   scripts/validate-deploy.sh [CAIRN_BINARY]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CAIRN=${1:-$ROOT/.build/debug/cairn}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$ROOT"
ok() { echo "  ok: $*"; }

echo "deploy/kubernetes"
for k in deploy/kubernetes deploy/kubernetes/tls; do
  kubectl kustomize "$k" > "$TMP/rendered.yaml"
  kubernetes-validate --strict --quiet -k 1.31.0 "$TMP/rendered.yaml"
  ok "$k renders ($(grep -c '^kind:' "$TMP/rendered.yaml") objects) and matches the 1.31 schemas"
done
grep -q "kind: StatefulSet" "$TMP/rendered.yaml" && grep -q "volumeClaimTemplates" "$TMP/rendered.yaml" \
  && grep -q "readinessProbe" "$TMP/rendered.yaml" && grep -q "kind: PodDisruptionBudget" "$TMP/rendered.yaml" \
  || { echo "rendered manifests lack a StatefulSet with claims and probes, or the PDB"; exit 1; }
"$CAIRN" config check deploy/kubernetes/base/cairn.toml >/dev/null
ok "ConfigMap cairn.toml passes cairn config check"

echo "deploy/docker"
python3 scripts/check-compose.py deploy/docker/compose.yaml
for path in $(awk '/^COPY [^-]/ {for (i = 2; i < NF; i++) print $i}' deploy/docker/Dockerfile); do
  [ -e "$path" ] || { echo "Dockerfile copies $path, which does not exist"; exit 1; }
done
grep -q '^FROM swift:.* AS build' deploy/docker/Dockerfile && grep -q '^COPY --from=build' deploy/docker/Dockerfile
ok "Dockerfile: two stages, every copied path exists"

echo "deploy/systemd"
if command -v systemd-analyze >/dev/null; then
  sed "s|/usr/local/bin/cairn|$CAIRN|g" deploy/systemd/cairn.service > "$TMP/cairn.service"
  systemd-analyze verify "$TMP/cairn.service"
  ok "systemd-analyze verify cairn.service"
else
  echo "  skipped: systemd-analyze is not installed"
fi
"$CAIRN" config check deploy/systemd/cairn.toml >/dev/null
ok "cairn.toml passes cairn config check"

echo "deploy/containerd"
if command -v containerd >/dev/null; then
  containerd --config deploy/containerd/config.toml config dump > "$TMP/containerd.toml"
  grep -q 'address = "/run/cairn/agent.sock"' "$TMP/containerd.toml"
  ok "containerd loads config.toml with the cairn proxy plugin"
else
  echo "  skipped: containerd is not installed"
fi
echo "deploy/: valid"
