#!/usr/bin/env bash
# Builds what tests/node/up.sh runs, cached outside git and reused when present:
# - the control plane (tests/control-plane/build.sh) plus kubelet, kube-scheduler and kube-proxy
#   from the same pinned k8s.io/kubernetes module;
# - the images, as OCI archives for `ctr images import` (no registry): the pod sandbox's pause
#   (a static C program), busybox (Debian's busybox-static), the token consumer
#   (tests/node/consumer: the gitlab-runner crate and busybox for its shell executor) and the
#   operator (deploy/image/build.sh, retagged).
# Prints "bin=DIR images=DIR" on its last line. Needs Go, gcc, cargo, python3, busybox-static.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/node/lib.sh
. "$here/lib.sh"
version=v1.35.4
cache=${RUNNER_OPERATOR_CACHE:-$HOME/.cache/runner-operator}
bin=$("$repo/tests/control-plane/build.sh" | tail -n 1)
images=$cache/node/images
mkdir -p "$images"

pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=35 -X $pkg.gitTreeState=clean"
for name in kubelet kube-scheduler kube-proxy; do
  [ -x "$bin/$name" ] && continue
  echo "building $name ..." >&2
  start=$(date +%s)
  # kubelet and kube-proxy link cgo-free here too: no cadvisor libpfm, iptables through exec.
  (cd "$repo/tests/control-plane" && GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go build -p 2 -trimpath -ldflags "$ldflags" -o "$bin/$name.tmp" "k8s.io/kubernetes/cmd/$name")
  mv "$bin/$name.tmp" "$bin/$name"
  echo "$name built in $(( $(date +%s) - start )) s" >&2
done

oci() { python3 "$here/images/oci.py" "$@"; }
if [ ! -s "$images/pause.tar" ]; then
  gcc -static -Os -o "$images/pause" "$here/images/pause.c"
  oci pack --name runner-operator.test/pause:1 --out "$images/pause.tar" \
    --file "$images/pause:/pause" --entrypoint '["/pause"]'
fi
busybox=/bin/busybox
# Debian's busybox-static goes into the images: installed here on a fresh machine (as root),
# with the rest up.sh needs.
if [ ! -x "$busybox" ] && [ "$(id -u)" = 0 ]; then install_node_packages; fi
[ -x "$busybox" ] || { echo "busybox-static is missing: apt-get install busybox-static" >&2; exit 3; }
applets=(sh cat wget sleep ls env grep date echo)
links=(); for a in "${applets[@]}"; do links+=(--link "/bin/busybox:/bin/$a"); done
if [ ! -s "$images/busybox.tar" ]; then
  oci pack --name runner-operator.test/busybox:1 --out "$images/busybox.tar" \
    --file "$busybox:/bin/busybox" "${links[@]}" --entrypoint '["/bin/sh"]'
fi

# The consumer: its own workspace and target directory (its TLS stack stays out of ours).
consumer_target=$cache/node/consumer-target
# The tag follows the sources and how the image is packed (this script).
src_hash=$(cat "$here/consumer/Cargo.toml" "$here/consumer/Cargo.lock" "$here/consumer/src/"*.rs "$0" | sha256sum | cut -c1-16)
if [ ! -s "$images/consumer-$src_hash.tar" ]; then
  echo "building the consumer ..." >&2
  (cd "$here/consumer" && CARGO_TARGET_DIR=$consumer_target RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu >&2)
  rm -f "$images"/consumer-*.tar
  oci pack --name "runner-operator.test/consumer:$src_hash" --out "$images/consumer-$src_hash.tar" \
    --file "$consumer_target/x86_64-unknown-linux-gnu/release/runner-consumer:/usr/local/bin/runner-consumer" \
    --file /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:644 \
    --file "$busybox:/bin/busybox" "${links[@]}" --entrypoint '["/usr/local/bin/runner-consumer"]'
fi
echo "runner-operator.test/consumer:$src_hash" > "$images/consumer.ref"

# The operator image as users get it, tagged with the commit so an upgrade test can hold two.
echo "building the operator image ..." >&2
(cd "$repo" && deploy/image/build.sh >&2)
rev=$(cd "$repo" && git rev-parse --short=12 HEAD 2>/dev/null || echo dev)
oci retag --layout "$repo/target/image/oci" --name "ghcr.io/runner-operator/runner-operator:0.1.0-$rev" \
  --out "$images/operator.tar"
echo "ghcr.io/runner-operator/runner-operator:0.1.0-$rev" > "$images/operator.ref"
echo "bin=$bin images=$images"
