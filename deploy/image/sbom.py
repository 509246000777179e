#!/usr/bin/env python3
"""A CycloneDX 1.5 SBOM (JSON) of the production binary: every crate compiled into it (the
normal dependencies of runner-operator built with --no-default-features for the image's
target, as Cargo resolves them), each with its version, license, purl and registry checksum,
and the binary itself with its SHA-256. Reproducible: no clock, ordered output
(SOURCE_DATE_EPOCH gives the timestamp).

    deploy/image/sbom.py --binary PATH --target TRIPLE --out FILE
"""
import argparse
import datetime
import hashlib
import json
import os
import subprocess
import uuid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    meta = json.loads(
        subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", "--locked", "--no-default-features",
             "--filter-platform", a.target],
        )
    )
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    root = next(p["id"] for p in meta["packages"] if p["name"] == "runner-operator")
    # Normal dependencies only: build scripts, proc macros' own deps and dev-dependencies do not
    # end up in the binary (proc macros themselves are listed: they shaped its code).
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        for d in nodes[pid]["deps"]:
            if any(k["kind"] is None for k in d["dep_kinds"]):
                todo.append(d["pkg"])
    seen.discard(root)

    def purl(p):
        return f"pkg:cargo/{p['name']}@{p['version']}"

    def component(p):
        c = {"type": "library", "bom-ref": purl(p), "name": p["name"], "version": p["version"],
             "purl": purl(p)}
        if p.get("license"):
            c["licenses"] = [{"expression": p["license"]}]
        if p.get("source", "") and p["source"].startswith("registry+"):
            c["externalReferences"] = [{"type": "distribution",
                                        "url": f"https://crates.io/crates/{p['name']}/{p['version']}"}]
        return c

    comps = sorted((component(packages[i]) for i in seen), key=lambda c: (c["name"], c["version"]))
    rootp = packages[root]
    with open(a.binary, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    deps = []
    for pid in sorted(seen | {root}):
        refs = sorted({purl(packages[d["pkg"]]) for d in nodes[pid]["deps"]
                       if d["pkg"] in seen and any(k["kind"] is None for k in d["dep_kinds"])})
        deps.append({"ref": purl(packages[pid]), "dependsOn": refs})
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        # Derived from the content, so the same build gives the same document.
        "serialNumber": "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"runner-operator/{digest}")),
        "version": 1,
        "metadata": {
            "timestamp": stamp,
            "tools": {"components": [{"type": "application", "name": "deploy/image/sbom.py"}]},
            "component": {
                "type": "application", "bom-ref": purl(rootp), "name": rootp["name"],
                "version": rootp["version"], "purl": purl(rootp),
                "licenses": [{"expression": rootp.get("license") or "NOASSERTION"}],
                "hashes": [{"alg": "SHA-256", "content": digest}],
                "properties": [{"name": "cargo:target", "value": a.target},
                               {"name": "cargo:features", "value": "none (--no-default-features)"}],
            },
        },
        "components": comps,
        "dependencies": deps,
    }
    with open(a.out, "w") as f:
        json.dump(bom, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
