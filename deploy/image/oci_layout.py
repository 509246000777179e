#!/usr/bin/env python3
"""Assembles the operator image as an OCI image layout, without a container engine: one image
per platform (linux/amd64, linux/arm64) under one image index.

One layer: the static binary, CA certificates, /etc/passwd and /etc/group with the non-root
user 65532, and /tmp. Every timestamp is SOURCE_DATE_EPOCH and every owner is root, so the same
binary and certificates give the same digest. Push the result with
`crane push DIR REF` or `skopeo copy oci:DIR:TAG docker://REF`.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile
import time

PASSWD = b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = b"root:x:0:\nnonroot:x:65532:\n"


def layer(binary: bytes, ca: bytes, mtime: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, mode, data=None):
            info = tarfile.TarInfo(name)
            info.mtime, info.mode, info.uid, info.gid = mtime, mode, 0, 0
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        for d in ["etc", "etc/ssl", "etc/ssl/certs", "home", "usr", "usr/local", "usr/local/bin"]:
            add(d + "/", 0o755)
        add("home/nonroot/", 0o700)
        add("tmp/", 0o1777)
        add("etc/passwd", 0o644, PASSWD)
        add("etc/group", 0o644, GROUP)
        add("etc/ssl/certs/ca-certificates.crt", 0o644, ca)
        add("usr/local/bin/runner-operator", 0o755, binary)
    return buf.getvalue()


def write_blob(out: str, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(out, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def image(out: str, arch: str, binary: bytes, ca: bytes, epoch: int, created: str, labels: dict) -> dict:
    """One platform's image manifest (its layer, config and manifest blobs); its descriptor."""
    tar = layer(binary, ca, epoch)
    gz = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0, compresslevel=9) as g:
        g.write(tar)
    layer_desc = write_blob(out, gz.getvalue())
    config = {
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": {
            "User": "65532:65532",
            "Env": ["PATH=/usr/local/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
            "Entrypoint": ["/usr/local/bin/runner-operator"],
            "Cmd": ["run"],
            "ExposedPorts": {"8080/tcp": {}},
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        "history": [{"created": created, "created_by": "deploy/image/build.sh"}],
    }
    config_desc = write_blob(out, json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer_desc}],
        "annotations": labels,
    }
    desc = write_blob(out, json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    desc["bytes"] = layer_desc["size"] + config_desc["size"] + desc["size"]
    return desc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", required=True, action="append",
                   help="ARCH=PATH of a static runner-operator binary (amd64, arm64); repeatable. "
                        "One: a single-platform image; several: an image index")
    p.add_argument("--ca-certificates", default="/etc/ssl/certs/ca-certificates.crt")
    p.add_argument("--version", required=True, help="image tag, e.g. 0.1.0")
    p.add_argument("--revision", default="", help="git commit")
    p.add_argument("--source", default="https://github.com/runner-operator/runner-operator")
    p.add_argument("--out", required=True, help="directory of the OCI image layout")
    args = p.parse_args()

    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    with open(args.ca_certificates, "rb") as f:
        ca = f.read()
    labels = {
        "org.opencontainers.image.title": "runner-operator",
        "org.opencontainers.image.description": "Kubernetes operator that manages GitLab CI runners declaratively",
        "org.opencontainers.image.version": args.version,
        "org.opencontainers.image.revision": args.revision,
        "org.opencontainers.image.source": args.source,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.created": created,
    }
    os.makedirs(os.path.join(args.out, "blobs", "sha256"), exist_ok=True)
    platforms = []
    for spec in args.binary:
        arch, _, path = spec.rpartition("=")
        with open(path, "rb") as f:
            desc = image(args.out, arch or "amd64", f.read(), ca, epoch, created, labels)
        platforms.append((arch or "amd64", desc))
    ref = {"org.opencontainers.image.ref.name": args.version}
    if len(platforms) == 1:
        arch, desc = platforms[0]
        top = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": desc["digest"], "size": desc["size"],
               "platform": {"architecture": arch, "os": "linux"}, "annotations": ref}
        total = desc["bytes"]
    else:
        # One reference for every platform: the runtime picks its own.
        image_index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": d["digest"], "size": d["size"],
                           "platform": {"architecture": a, "os": "linux"}} for a, d in platforms],
            "annotations": labels,
        }
        idx = write_blob(args.out, json.dumps(image_index, sort_keys=True, separators=(",", ":")).encode())
        top = {"mediaType": "application/vnd.oci.image.index.v1+json", **idx, "annotations": ref}
        total = sum(d["bytes"] for _, d in platforms) + idx["size"]
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [top]}
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump(index, f, sort_keys=True, separators=(",", ":"))
    with open(os.path.join(args.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(f"{top['digest']} {total}")


if __name__ == "__main__":
    main()
