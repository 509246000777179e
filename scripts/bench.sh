#!/usr/bin/env bash
# Regenerates a table in docs/benchmarks.md with the operator's release binary as its own process.
#   scripts/bench.sh          the first scale table (issue 15): the local API, 1 000 Runners at
#                             the connection's default rate limit (10 requests/s) and 10 000 at
#                             500 requests/s, resync 120 s; about 35 minutes on 2 cores.
#   scripts/bench.sh scale    the second (issue 23): 10 000 Runners at 500 requests/s on the real
#                             control plane (tests/control-plane, built on first use) and on the
#                             local API; about 16 minutes on 2 cores. Run nothing else meanwhile:
#                             the API server's CPU sets the pace on the real backend.
# Results (JSON) stay in target/bench/ for the closing notes.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-first}
cargo build --release --locked --example bench
# The operator as shipped: the production build, without the sandbox's stand-ins.
cargo build --release --locked --no-default-features --bin runner-operator
mkdir -p target/bench
bench=target/release/examples/bench
case $mode in
  first)
    $bench --runners 1000 --rps 0 --resync-s 120 --live-resyncs 1 --json target/bench/n1000.json
    $bench --runners 10000 --rps 500 --resync-s 120 --live-resyncs 1 --json target/bench/n10000.json
    table=$($bench --render target/bench/n1000.json target/bench/n10000.json)
    marker=bench
    how="by \`scripts/bench.sh\` (20 ms GitLab latency per call, \`--concurrency 32\`)" ;;
  scale)
    $bench --backend real --runners 10000 --rps 500 --resync-s 60 --live-resyncs 0 --json target/bench/real10k.json
    $bench --backend local --runners 10000 --rps 500 --resync-s 60 --live-resyncs 0 --json target/bench/local10k.json
    table=$($bench --render target/bench/real10k.json target/bench/local10k.json)
    marker=scale
    how="by \`scripts/bench.sh scale\` (\`--runners 10000 --rps 500 --resync-s 60 --live-resyncs 0\`, 20 ms GitLab latency per call, \`--concurrency 32\`)" ;;
  *) echo "usage: scripts/bench.sh [scale]" >&2; exit 2 ;;
esac
machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)"
python3 - "$table" "$machine" "$marker" "$how" <<'PY'
import re, sys
table, machine, marker, how = sys.argv[1:5]
path = "docs/benchmarks.md"
doc = open(path).read()
block = f"<!-- {marker}:start -->\nMeasured on {machine} {how}:\n\n{table}\n<!-- {marker}:end -->"
doc, n = re.subn(rf"<!-- {marker}:start -->.*?<!-- {marker}:end -->", lambda _: block, doc, flags=re.S)
if n != 1:
    sys.exit(f"docs/benchmarks.md has no <!-- {marker}:start --> block")
open(path, "w").write(doc)
PY
echo "docs/benchmarks.md updated"
