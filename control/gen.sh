#!/bin/sh
# gen.sh regenerates controlpb from control.proto with the plugin versions
# pinned here. It needs protoc (Debian: protobuf-compiler).
set -eu
cd "$(dirname "$0")"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN=$bin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
GOBIN=$bin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
PATH=$bin:$PATH protoc \
	--go_out=. --go_opt=module=github.com/sidedns/sidedns/control \
	--go-grpc_out=. --go-grpc_opt=module=github.com/sidedns/sidedns/control \
	control.proto
