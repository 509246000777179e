#!/usr/bin/env python3
"""One-layer OCI image archives for `ctr images import`, without a container engine.

  oci.py pack --name REF --out TAR [--file SRC:DEST[:MODE]]... [--link TARGET:DEST]...
              [--entrypoint JSON] [--user UID:GID]
  oci.py retag --layout DIR --name REF --out TAR   (an OCI layout, e.g. deploy/image/build.sh's)

Every archive names its image in the index (io.containerd.image.name), so ctr imports it under
REF and pods using REF with imagePullPolicy Never/IfNotPresent never reach a registry.
"""
import argparse, gzip, hashlib, io, json, os, tarfile


def blob(files: dict, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    files["blobs/sha256/" + digest] = data
    return {"digest": "sha256:" + digest, "size": len(data)}


def write_archive(out: str, files: dict) -> None:
    with tarfile.open(out, "w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


def index_for(manifest_desc: dict, name: str,
              media_type: str = "application/vnd.oci.image.manifest.v1+json") -> bytes:
    entry = {
        "mediaType": media_type, **manifest_desc,
        "annotations": {"io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
    }
    # A multi-platform image index names no platform of its own.
    if media_type.endswith("manifest.v1+json"):
        entry["platform"] = {"architecture": "amd64", "os": "linux"}
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry],
    }).encode()


def pack(args) -> None:
    buf = io.BytesIO()
    dirs = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add_dirs(path):
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d + "/")
                    info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
                    tar.addfile(info)
        for d in ["tmp"]:
            dirs.add(d)
            info = tarfile.TarInfo(d + "/")
            info.type, info.mode = tarfile.DIRTYPE, 0o1777
            tar.addfile(info)
        for spec in args.file or []:
            src, dest, *mode = spec.split(":")
            add_dirs(dest)
            with open(src, "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(dest.strip("/"))
            info.size, info.mode = len(data), int(mode[0], 8) if mode else 0o755
            tar.addfile(info, io.BytesIO(data))
        for spec in args.link or []:
            target, dest = spec.split(":")
            add_dirs(dest)
            info = tarfile.TarInfo(dest.strip("/"))
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    layer = buf.getvalue()
    files = {}
    gz = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0) as g:
        g.write(layer)
    layer_desc = blob(files, gz.getvalue())
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": json.loads(args.entrypoint), "User": args.user,
                   "Env": ["PATH=/usr/local/bin:/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    config_desc = blob(files, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer_desc}],
    }
    manifest_desc = blob(files, json.dumps(manifest).encode())
    files["index.json"] = index_for(manifest_desc, args.name)
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    write_archive(args.out, files)


def retag(args) -> None:
    files = {}
    for root, _, names in os.walk(args.layout):
        for n in names:
            path = os.path.join(root, n)
            with open(path, "rb") as f:
                files[os.path.relpath(path, args.layout)] = f.read()
    index = json.loads(files["index.json"])
    m = index["manifests"][0]
    desc = {"digest": m["digest"], "size": m["size"]}
    files["index.json"] = index_for(desc, args.name, m["mediaType"])
    write_archive(args.out, files)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("--name", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--file", action="append")
    a.add_argument("--link", action="append")
    a.add_argument("--entrypoint", default='["/bin/sh"]')
    a.add_argument("--user", default="65532:65532")
    r = sub.add_parser("retag")
    r.add_argument("--layout", required=True)
    r.add_argument("--name", required=True)
    r.add_argument("--out", required=True)
    args = p.parse_args()
    pack(args) if args.cmd == "pack" else retag(args)


if __name__ == "__main__":
    main()
