#!/bin/sh
# build.sh builds the pinned current Docker Engine (dockerd, containerd v2 and its runc shim, the compose v2
# CLI plugin) from the Go module proxy, once. The binaries are cached by version outside the repository, so
# later runs (and CI on this machine) reuse them; the first build takes about 9 minutes on 2 idle cores.
# It prints the bin directory on its last line; with --cached it only prints it, or fails when the
# binaries are not built yet. Nothing here touches the machine's own Docker.
set -eu

MOBY=v2.0.0-beta.24        # the Engine 29 line; the module proxy serves only the beta tags of moby/moby/v2
CONTAINERD=v2.3.5          # the containerd client version moby v2.0.0-beta.24's go.mod requires
COMPOSE=v2.40.3            # compose v2, run as a docker CLI plugin

CACHE=${SIDEDNS_ENGINE_CACHE:-/var/cache/sidedns-engine}
DIR="$CACHE/moby-$MOBY+containerd-$CONTAINERD+compose-$COMPOSE"

if [ -f "$DIR/complete" ]; then
	echo "$DIR/bin"
	exit 0
fi
if [ "${1:-}" = --cached ]; then
	echo "not built: $DIR" >&2
	exit 3
fi

mkdir -p "$CACHE"
TMP="$DIR.partial.$$"
rm -rf "$TMP"
mkdir -p "$TMP/bin"
trap 'rm -rf "$TMP"' EXIT

# Static, pure-Go binaries: no C headers needed, and the result does not depend on the machine's libraries.
export CGO_ENABLED=0 GOBIN="$TMP/bin" GOFLAGS=-trimpath
start=$(date +%s)
nice -n 19 go install -tags 'netgo osusergo exclude_graphdriver_btrfs' \
	-ldflags "-X github.com/moby/moby/v2/dockerversion.Version=$MOBY -X github.com/moby/moby/v2/dockerversion.GitCommit=$MOBY" \
	"github.com/moby/moby/v2/cmd/dockerd@$MOBY" "github.com/moby/moby/v2/cmd/docker-proxy@$MOBY"
nice -n 19 go install \
	-ldflags "-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD" \
	"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD" \
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD"
# compose's go.mod has exclude directives, which `go install pkg@version` refuses: build it as the main
# module, from a writable copy of the module the proxy serves.
SRC=$(go mod download -json "github.com/docker/compose/v2@$COMPOSE" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
cp -r "$SRC" "$TMP/compose-src"
chmod -R u+w "$TMP/compose-src"
mkdir -p "$TMP/cli-plugins"
(cd "$TMP/compose-src" && nice -n 19 go build -o "$TMP/cli-plugins/docker-compose" \
	-ldflags "-X github.com/docker/compose/v2/internal.Version=$COMPOSE" ./cmd)
rm -rf "$TMP/compose-src"

{
	echo "moby $MOBY"
	echo "containerd $CONTAINERD"
	echo "compose $COMPOSE"
	go version
	echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - start ))s"
} > "$TMP/versions"
touch "$TMP/complete"
rm -rf "$DIR"
mv "$TMP" "$DIR"
trap - EXIT
echo "$DIR/bin"
