#!/usr/bin/env bash
# Regenerates Sources/EtcdProto/*.pb.swift from Sources/EtcdProto/proto.
# Needs Debian's protoc (protobuf-compiler) and protoc-gen-swift from
# apple/swift-protobuf 1.39.0. The plugin is built here, outside the project,
# only when PROTOC_GEN_SWIFT does not point at one already: the regular build
# and CI never build it, they compile the committed output.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
proto_dir="$root/Sources/EtcdProto/proto"
out_dir="$root/Sources/EtcdProto"

command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler" >&2; exit 1; }
plugin=${PROTOC_GEN_SWIFT:-}
if [ -z "$plugin" ]; then
  work=${TMPDIR:-/tmp}/swetcd-protoc-gen-swift
  if [ ! -x "$work/.build/release/protoc-gen-swift" ]; then
    rm -rf "$work"
    git clone -q --depth 1 --branch 1.39.0 https://github.com/apple/swift-protobuf "$work"
    (cd "$work" && swift build -c release --product protoc-gen-swift)
  fi
  plugin="$work/.build/release/protoc-gen-swift"
fi

rm -f "$out_dir"/*.pb.swift
cd "$proto_dir"
# Public visibility: the generated types are the module's API. One output
# directory (no subdirectories) so SwiftPM sees plain files.
protoc --plugin=protoc-gen-swift="$plugin" \
  --swift_opt=Visibility=Public --swift_opt=FileNaming=PathToUnderscores \
  --swift_out="$out_dir" \
  mvccpb/kv.proto authpb/auth.proto etcdserverpb/rpc.proto \
  v3lockpb/v3lock.proto v3electionpb/v3election.proto raftpb/raft.proto \
  etcdserverpb/raft_internal.proto walpb/record.proto
ls "$out_dir"/*.pb.swift
python3 "$root/scripts/generate-field-names.py"
