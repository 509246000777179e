#!/usr/bin/env bash
# Builds the operator image and chart of the previous release (the commit in
# tests/node/previous-release) for the upgrade scenario, from git's own copy of that commit
# (git archive: no worktree left behind), with its own cargo target directory. Cached per commit.
# Prints "image=REF tar=FILE chart=DIR" on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${RUNNER_OPERATOR_CACHE:-$HOME/.cache/runner-operator}
commit=$(awk 'NR == 1 {print $1}' "$here/previous-release")
short=${commit:0:12}
out=$cache/node/previous/$short
ref=ghcr.io/runner-operator/runner-operator:0.1.0-$short
if [ ! -s "$out/operator.tar" ] || [ ! -f "$out/chart/Chart.yaml" ]; then
  rm -rf "$out"; mkdir -p "$out/src"
  git -C "$repo" archive "$commit" | tar -x -C "$out/src"
  echo "building the operator image of $short (the previous release) ..." >&2
  start=$(date +%s)
  (cd "$out/src" && RUNNER_OPERATOR_GIT_COMMIT=$commit \
    SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct "$commit") \
    CARGO_TARGET_DIR=$cache/node/previous-target deploy/image/build.sh >&2)
  python3 "$here/images/oci.py" retag --layout "$out/src/target/image/oci" --name "$ref" --out "$out/operator.tar"
  cp -r "$out/src/charts/runner-operator" "$out/chart"
  rm -rf "$out/src"
  echo "built in $(( $(date +%s) - start )) s" >&2
fi
echo "image=$ref tar=$out/operator.tar chart=$out/chart"
