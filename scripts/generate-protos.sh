#!/usr/bin/env bash
# Regenerates the messages (Sources/CairnMessages/Generated, protoc-gen-swift of
# swift-protobuf 1.39.0) and the gRPC services (Sources/CairnProto/Generated,
# protoc-gen-grpc-swift-2 of grpc-swift-protobuf 2.4.1) from Protos/ with protoc.
#
#   scripts/generate-protos.sh          rewrite the generated code in place
#   scripts/generate-protos.sh --check  regenerate into a temp dir; fail if it differs
#
# The plugins are built once, in debug mode (what they generate is the same; a release build
# of SwiftProtobuf took CI four more minutes), in a scratch package under
# .build-protoc-plugins/ (about 2-4 minutes on 2 cores); later runs reuse them.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MESSAGES="$ROOT/Sources/CairnMessages/Generated"
SERVICES="$ROOT/Sources/CairnProto/Generated"
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

# generate MESSAGES_DIR SERVICES_DIR
generate() {
  local messages=$1 services=$2
  mkdir -p "$messages" "$services"
  local protos
  protos=$(cd "$ROOT/Protos" && find . -name '*.proto' | sed 's|^\./||' | sort)
  (cd "$ROOT/Protos" && protoc -I . \
    --plugin=protoc-gen-swift="$PLUGINS/.build/debug/protoc-gen-swift" \
    --plugin=protoc-gen-grpc-swift-2="$PLUGINS/.build/debug/protoc-gen-grpc-swift-2" \
    --swift_out="$messages" --swift_opt=Visibility=Public,FileNaming=PathToUnderscores \
    --grpc-swift-2_out="$services" \
    --grpc-swift-2_opt=Visibility=Public,FileNaming=PathToUnderscores,ExtraModuleImports=CairnMessages \
    $protos)
}

if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  generate "$tmp/messages" "$tmp/services"
  if ! diff -ru "$MESSAGES" "$tmp/messages" || ! diff -ru "$SERVICES" "$tmp/services"; then
    echo "generated code is stale: run scripts/generate-protos.sh and commit the result" >&2
    exit 1
  fi
  echo "generated code is up to date"
else
  rm -rf "$MESSAGES" "$SERVICES"
  generate "$MESSAGES" "$SERVICES"
  echo "wrote $(ls "$MESSAGES" | wc -l) files to $MESSAGES and $(ls "$SERVICES" | wc -l) to $SERVICES"
fi
