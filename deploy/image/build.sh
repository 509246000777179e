#!/usr/bin/env bash
# Builds the operator image without a container engine, as an OCI image layout in
# target/image/oci (an image index: linux/amd64 and linux/arm64): a static release binary built
# without the emulators
# (--no-default-features), CA certificates and the non-root user 65532 — the content the
# Dockerfile produces with an engine, and its CycloneDX SBOM beside it
# (target/image/runner-operator.cdx.json). Prints "<manifest digest> <bytes>" on its last line.
#
#   deploy/image/build.sh
#   crane push target/image/oci ghcr.io/runner-operator/runner-operator:0.1.0
#   # or: skopeo copy oci:target/image/oci:0.1.0 docker://ghcr.io/runner-operator/runner-operator:0.1.0
set -euo pipefail
cd "$(dirname "$0")/../.."
target=x86_64-unknown-linux-gnu
# linux/arm64 cross-compiled (musl: static by itself) with Debian's aarch64 gcc as C compiler and
# linker; IMAGE_PLATFORMS=amd64 builds the amd64 image alone.
platforms=${IMAGE_PLATFORMS:-amd64 arm64}
arm_target=aarch64-unknown-linux-musl
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
# crt-static: glibc linked in, so the image needs no libc (since glibc 2.34 DNS lookups need no
# NSS modules either). --target keeps the flag off build scripts and proc macros.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --no-default-features --bin runner-operator --target "$target" >&2
binary=${CARGO_TARGET_DIR:-target}/$target/release/runner-operator
if readelf -l "$binary" | grep -q 'program interpreter'; then echo "$binary is not static" >&2; exit 1; fi
binaries=(--binary "amd64=$binary")
mkdir -p target/image
# The SBOM beside the layout: every crate compiled into the binary, and the binary's hash.
python3 deploy/image/sbom.py --binary "$binary" --target "$target" --out target/image/runner-operator.cdx.json
if [[ " $platforms " == *" arm64 "* ]]; then
  if ! rustup target list --installed 2>/dev/null | grep -qx "$arm_target" || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    echo "linux/arm64 needs: rustup target add $arm_target; apt-get install gcc-aarch64-linux-gnu (or IMAGE_PLATFORMS=amd64)" >&2
    exit 1
  fi
  CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
    cargo build --release --locked --no-default-features --bin runner-operator --target "$arm_target" >&2
  arm_binary=${CARGO_TARGET_DIR:-target}/$arm_target/release/runner-operator
  if readelf -l "$arm_binary" | grep -q 'program interpreter'; then echo "$arm_binary is not static" >&2; exit 1; fi
  binaries+=(--binary "arm64=$arm_binary")
  python3 deploy/image/sbom.py --binary "$arm_binary" --target "$arm_target" --out target/image/runner-operator-arm64.cdx.json
fi
rm -rf target/image/oci
python3 deploy/image/oci_layout.py "${binaries[@]}" --version "$version" --revision "$revision" \
  --out target/image/oci
