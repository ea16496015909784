#!/usr/bin/env bash
# Validates deploy/ offline, as CI does:
#  - Kubernetes: `kubectl kustomize` renders both kustomizations (secure, insecure), and every
#    rendered object matches the Kubernetes 1.31 schemas (kubernetes-validate, strict: no
#    unknown fields), the Secrets `cairn certs init --kubernetes` writes too; every Secret
#    and file the StatefulSet mounts or names is one of them; the ConfigMap's cairn.toml
#    passes `cairn config check` with each pod's certificate and is refused without.
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

# The secure path: what `cairn certs init` makes is what the manifests and configs name.
"$CAIRN" certs init --dir "$TMP/certs" --nodes cairn-0,cairn-1,cairn-2,n1,n2,n3 --kubernetes cairn \
  --hosts '*.cairn-peers.cairn.svc.cluster.local,n1,n2,n3' >/dev/null
ok "cairn certs init made a CA, peer certificates, a tokens file and the Kubernetes Secrets"

echo "deploy/kubernetes"
for k in deploy/kubernetes deploy/kubernetes/insecure deploy/kubernetes/agent; do
  kubectl kustomize "$k" > "$TMP/rendered.yaml" 2> >(grep -v "commonLabels' is deprecated" >&2)
  kubernetes-validate --strict --quiet -k 1.31.0 "$TMP/rendered.yaml"
  ok "$k renders ($(grep -c '^kind:' "$TMP/rendered.yaml") objects) and matches the 1.31 schemas"
  cp "$TMP/rendered.yaml" "$TMP/$(basename "$k").yaml"
done
grep -q "kind: StatefulSet" "$TMP/kubernetes.yaml" && grep -q "volumeClaimTemplates" "$TMP/kubernetes.yaml" \
  && grep -q "readinessProbe" "$TMP/kubernetes.yaml" && grep -q "kind: PodDisruptionBudget" "$TMP/kubernetes.yaml" \
  || { echo "rendered manifests lack a StatefulSet with claims and probes, or the PDB"; exit 1; }
grep -q "kind: DaemonSet" "$TMP/agent.yaml" && grep -q -- "- /run/cairn/agent.sock" "$TMP/agent.yaml" \
  || { echo "the agent's DaemonSet does not serve /run/cairn/agent.sock, the socket deploy/containerd/config.toml names"; exit 1; }
# One version: the images deployed are the build's (CairnCore's CairnVersion).
version=$(sed -n 's/.*static let current = "\(.*\)".*/\1/p' Sources/CairnCore/Version.swift)
for k in kubernetes agent; do
  grep -q "image: cairn:$version\$" "$TMP/$k.yaml" || { echo "deploy/kubernetes ($k) does not deploy cairn:$version"; exit 1; }
done
ok "the manifests deploy the image of this version (cairn:$version), the agent on every node"
kubernetes-validate --strict --quiet -k 1.31.0 "$TMP/certs/kubernetes-secrets.yaml"
python3 scripts/check-k8s-secrets.py "$TMP/kubernetes.yaml" "$TMP/certs/kubernetes-secrets.yaml"
# Every pod's settings as it sees them: the ConfigMap plus its environment (its own
# certificate, from its name), with the files from the generated Secrets.
for pod in cairn-0 cairn-2; do
  CAIRN_TLS_CERT="$TMP/certs/peer-$pod.pem" CAIRN_TLS_KEY="$TMP/certs/peer-$pod.key" CAIRN_TLS_CA="$TMP/certs/ca.pem" \
    CAIRN_TOKENS_FILE="$TMP/certs/tokens" CAIRN_NODE_ID="$pod" "$CAIRN" config check --env deploy/kubernetes/base/cairn.toml >/dev/null
done
ok "base cairn.toml with each pod's certificate passes cairn config check (closed by default)"
if "$CAIRN" config check deploy/kubernetes/base/cairn.toml >/dev/null 2>&1; then
  echo "base cairn.toml without its certificates was accepted"; exit 1
fi
ok "base cairn.toml without its Secrets is refused (no open node off loopback)"
"$CAIRN" config check deploy/kubernetes/insecure/cairn.toml >/dev/null
ok "insecure cairn.toml passes cairn config check"

echo "deploy/docker"
python3 scripts/check-compose.py deploy/docker/compose.yaml
python3 scripts/check-compose.py deploy/docker/compose.yaml deploy/docker/compose.insecure.yaml
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
  sed "s|/usr/local/bin/cairn|$CAIRN|g" deploy/systemd/cairn-agent.service > "$TMP/cairn-agent.service"
  systemd-analyze verify "$TMP/cairn-agent.service"
  ok "systemd-analyze verify cairn-agent.service"
  grep -q -- "--unix /run/cairn/agent.sock" deploy/systemd/cairn-agent.service \
    && grep -q 'address = "/run/cairn/agent.sock"' deploy/containerd/config.toml \
    || { echo "the agent unit's socket is not the one deploy/containerd/config.toml names"; exit 1; }
  ok "the agent unit serves the socket containerd's config names"
else
  echo "  skipped: systemd-analyze is not installed"
fi
CAIRN_TLS_CERT="$TMP/certs/peer-n1.pem" CAIRN_TLS_KEY="$TMP/certs/peer-n1.key" CAIRN_TLS_CA="$TMP/certs/ca.pem" \
  CAIRN_TOKENS_FILE="$TMP/certs/tokens" "$CAIRN" config check --env deploy/systemd/cairn.toml >/dev/null
ok "cairn.toml, with the files cairn certs init made for n1, passes cairn config check"

echo "deploy/containerd"
if command -v containerd >/dev/null; then
  containerd --config deploy/containerd/config.toml config dump > "$TMP/containerd.toml"
  grep -q 'address = "/run/cairn/agent.sock"' "$TMP/containerd.toml"
  ok "containerd loads config.toml with the cairn proxy plugin"
else
  echo "  skipped: containerd is not installed"
fi
echo "deploy/prometheus"
command -v promtool >/dev/null || { echo "promtool missing (Debian package prometheus; scripts/setup installs it)"; exit 1; }
promtool check rules deploy/prometheus/cairn-alerts.yaml >/dev/null
(cd deploy/prometheus && promtool test rules cairn-alerts.test.yaml >/dev/null)
ok "cairn-alerts.yaml: promtool check rules, and promtool test rules fires each tested alert"
# Every metric an alert uses is one a node exports (names from `cairn` itself, not a list).
for metric in $(grep -o '\b\(cairn\|process\)_[a-z_]*' deploy/prometheus/cairn-alerts.yaml | sort -u); do
  grep -rq "\"$metric\"" Sources/ || { echo "cairn-alerts.yaml uses $metric, which no node exports"; exit 1; }
done
ok "every metric the alerts use is exported by Sources/"

echo "deploy/: valid"
