#!/usr/bin/env bash
# Where the audit log's CPU goes, per gateway thread: the embedded file log (default
# config) run by this checkout's release build and, with BASELINE, by another build,
# alternated per round. Per run: CPU µs per request of the bridge thread (`gk-bridge`:
# WAL reading, hash chain, Merkle, checkpoints, file sink, fsync) and of the shards
# together (`gk-shard-*`: requests, plus building and writing each record), from
# /proc/PID/task/*/stat before and after a closed-loop `gk-load run` (64 connections).
#
# usage: [BASELINE=/path/to/gatekeeper] [NO_BUILD=1] bench/audit-threads.sh [SECONDS_PER_RUN] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-8}
rounds=${2:-3}
OUT=${OUT:-bench/out/audit-threads-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p gatekeeper -p gatekeeper-loadtest
bin=$PWD/target/release

# shellcheck source=bench/lib.sh
. bench/lib.sh
trap cleanup EXIT

mock=$(start_listening "$OUT/mock" "$bin/gk-load" mock --listen 127.0.0.1:0 --threads 1)
declare -A exe=([head]=$bin/gatekeeper)
[ -z "${BASELINE:-}" ] || exe[base]=$BASELINE
builds=(head)
[ -z "${BASELINE:-}" ] || builds=(base head)
declare -A url
for k in "${builds[@]}"; do
    cat >"$OUT/$k.yaml" <<YAML
providers:
  - { name: mock, kind: openai_compatible, base_url: "http://$mock/v1" }
models:
  - { name: m, provider: mock, upstream_model: m }
audit: { data_dir: "$OUT/data-$k" }
YAML
    url[$k]=$(GATEKEEPER_LOG=warn start_listening "$OUT/gatekeeper-$k" "${exe[$k]}" serve \
        --config "$OUT/$k.yaml" --listen 127.0.0.1:0 --shards 2 --no-auth)
done

# "bridge shards" CPU seconds of PID's threads so far.
threads_s() {
    local t=$(getconf CLK_TCK)
    cat /proc/"$1"/task/*/stat | awk -v t="$t" '
        / \(gk-bridge\) / { b += $14 + $15 } / \(gk-shard-[0-9]+\) / { s += $14 + $15 }
        END { printf "%f %f\n", b / t, s / t }'
}

for r in $(seq 1 "$rounds"); do
    for k in "${builds[@]}"; do
        pid=$(cat "$OUT/gatekeeper-$k.pid")
        read -r b0 s0 < <(threads_s "$pid")
        "$bin/gk-load" run --url "http://${url[$k]}/v1/chat/completions" --connections 64 --duration "${secs}s" \
            --model m --max-tokens 16 --target-pid "$pid" --json "$OUT/$k-$r.json" >/dev/null
        read -r b1 s1 < <(threads_s "$pid")
        n=$(jq '.requests.sent' "$OUT/$k-$r.json")
        printf '%s %s %s %s %s\n' "$k" "$(jq '.rate_achieved' "$OUT/$k-$r.json")" \
            "$(jq '.cpu.target_us_per_request' "$OUT/$k-$r.json")" \
            "$(python3 -c "print(($b1 - $b0) * 1e6 / $n)")" "$(python3 -c "print(($s1 - $s0) * 1e6 / $n)")" \
            | tee -a "$OUT/runs.txt" >&2
    done
done
python3 - "$OUT/runs.txt" <<'PY' | tee "$OUT/summary.md"
import sys
rows = {}
for line in open(sys.argv[1]):
    k, *v = line.split()
    rows.setdefault(k, []).append(list(map(float, v)))
print("| build | req/s | gateway CPU µs/req | bridge thread µs/req | shards µs/req |")
print("|---|---|---|---|---|")
for k, rs in rows.items():
    m = [sum(c) / len(c) for c in zip(*rs)]
    print(f"| {k} | {m[0]:,.0f} | {m[1]:.1f} | {m[2]:.2f} | {m[3]:.1f} |")
PY
echo "raw results in $OUT" >&2
