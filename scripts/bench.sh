#!/usr/bin/env bash
# Regenerates the scale table in docs/benchmarks.md: the operator's release binary, as its own
# process, with 1 000 Runners at the connection's default rate limit (10 requests/s) and with
# 10 000 Runners at 500 requests/s. About 35 minutes on 2 cores (resync periods of 120 s: at 10 requests/s, 1 000 Runners need 8.3 periodic checks a second). Results (JSON) stay in
# target/bench/ for the closing notes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --example bench
# The operator as shipped: the production build, without the sandbox's stand-ins.
cargo build --release --locked --no-default-features --bin runner-operator
mkdir -p target/bench
bench=target/release/examples/bench
$bench --runners 1000 --rps 0 --resync-s 120 --live-resyncs 1 --json target/bench/n1000.json
$bench --runners 10000 --rps 500 --resync-s 120 --live-resyncs 1 --json target/bench/n10000.json
table=$($bench --render target/bench/n1000.json target/bench/n10000.json)
machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)"
python3 - "$table" "$machine" <<'PY'
import re, sys
table, machine = sys.argv[1], sys.argv[2]
path = "docs/benchmarks.md"
doc = open(path).read()
block = f"<!-- bench:start -->\nMeasured on {machine} by `scripts/bench.sh` (20 ms GitLab latency per call, `--concurrency 32`):\n\n{table}\n<!-- bench:end -->"
doc = re.sub(r"<!-- bench:start -->.*?<!-- bench:end -->", lambda _: block, doc, flags=re.S)
open(path, "w").write(doc)
PY
echo "docs/benchmarks.md updated"
