#!/usr/bin/env bash
# Regenerates Sources/CairnProto/Generated from Protos/ with protoc, protoc-gen-swift
# (swift-protobuf 1.39.0) and protoc-gen-grpc-swift-2 (grpc-swift-protobuf 2.4.1).
#
#   scripts/generate-protos.sh          rewrite the generated code in place
#   scripts/generate-protos.sh --check  regenerate into a temp dir; fail if it differs
#
# The plugins are built once, in debug mode (what they generate is the same; a release build
# of SwiftProtobuf took CI four more minutes), in a scratch package under
# .build-protoc-plugins/ (about 2-4 minutes on 2 cores); later runs reuse them.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/Sources/CairnProto/Generated"
PLUGINS=${CAIRN_PLUGIN_DIR:-$ROOT/.build-protoc-plugins}

if ! command -v protoc >/dev/null; then
  echo "protoc missing: apt-get install protobuf-compiler" >&2; exit 2
fi

if [ ! -x "$PLUGINS/.build/debug/protoc-gen-swift" ] || [ ! -x "$PLUGINS/.build/debug/protoc-gen-grpc-swift-2" ]; then
  echo "building protoc plugins in $PLUGINS (debug, one time)..." >&2
  mkdir -p "$PLUGINS/Dummy"
  : > "$PLUGINS/Dummy/Dummy.swift"
  cat > "$PLUGINS/Package.swift" <<'PKG'
// swift-tools-version:6.1
import PackageDescription
let package = Package(
  name: "protoc-plugins",
  dependencies: [
    .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", exact: "2.4.1"),
  ],
  targets: [.target(name: "Dummy", path: "Dummy")]
)
PKG
  (cd "$PLUGINS" && swift build --product protoc-gen-swift >&2 \
    && swift build --product protoc-gen-grpc-swift-2 >&2)
fi

generate() {
  local dest=$1
  mkdir -p "$dest"
  local protos
  protos=$(cd "$ROOT/Protos" && find . -name '*.proto' | sed 's|^\./||' | sort)
  (cd "$ROOT/Protos" && protoc -I . \
    --plugin=protoc-gen-swift="$PLUGINS/.build/debug/protoc-gen-swift" \
    --plugin=protoc-gen-grpc-swift-2="$PLUGINS/.build/debug/protoc-gen-grpc-swift-2" \
    --swift_out="$dest" --swift_opt=Visibility=Public,FileNaming=PathToUnderscores \
    --grpc-swift-2_out="$dest" --grpc-swift-2_opt=Visibility=Public,FileNaming=PathToUnderscores \
    $protos)
}

if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  generate "$tmp"
  if ! diff -ru "$OUT" "$tmp"; then
    echo "generated code is stale: run scripts/generate-protos.sh and commit the result" >&2
    exit 1
  fi
  echo "generated code is up to date"
else
  rm -rf "$OUT"
  generate "$OUT"
  echo "wrote $(ls "$OUT" | wc -l) files to $OUT"
fi
