#!/usr/bin/env bash
# Builds the real control plane once (cached; see build.sh), installs the test tools, then runs
# the tests that need it: every operator scenario against kube-apiserver, under the chart's
# ServiceAccount, the kubectl script compared with the in-memory API, admission, the real-only
# scenarios and the Argo CD health check in gopher-lua. Extra arguments go to the test binary
# (e.g. a filter: tests/control-plane/e2e.sh operator::real::create).
set -euo pipefail
cd "$(dirname "$0")/../.."
tests/control-plane/build.sh >/dev/null
./.ci/install-tools
if [ $# -eq 0 ]; then set -- --ignored; else set -- --include-ignored "$@"; fi
exec cargo test --test it -- "$@"
