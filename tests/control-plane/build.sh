#!/usr/bin/env bash
# Builds the real control plane used by the end-to-end tests: kube-apiserver and
# kube-controller-manager from k8s.io/kubernetes (version below), etcd from go.etcd.io/etcd.
# Output: $CONTROL_PLANE_BIN (default ~/.cache/runner-operator/control-plane/<version>/bin),
# outside git and reused when present. Prints the directory on its last line.
set -euo pipefail
cd "$(dirname "$0")"
version=v1.35.4
cache=${RUNNER_OPERATOR_CACHE:-$HOME/.cache/runner-operator}
bin=${CONTROL_PLANE_BIN:-$cache/control-plane/$version/bin}
if [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kube-controller-manager" ] && [ -x "$bin/etcd" ]; then
  echo "$bin"; exit 0
fi
command -v go >/dev/null || { echo "go not found: install Go >= 1.25 to build the control plane" >&2; exit 3; }
mkdir -p "$bin"
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=35 -X $pkg.gitTreeState=clean"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$version"
start=$(date +%s)
export GOFLAGS=-mod=mod CGO_ENABLED=0
# -p 2: the machines have two cores; the Go build cache (GOCACHE) makes a rebuild cheap.
for target in k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager ./etcd; do
  name=$(basename "$target")
  echo "building $name ..." >&2
  go build -p 2 -trimpath -ldflags "$ldflags" -o "$bin/$name.tmp" "$target"
  mv "$bin/$name.tmp" "$bin/$name"
done
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
