#!/usr/bin/env bash
# Cost of routing: one gateway, throughput with `model: auto` in cost mode (the router
# scores the prompt and chooses among four models) against a fixed model (the same
# score, one candidate), as a ratio in one run, and the gateway's own time per
# request (`gatekeeper_overhead_seconds`, the histogram behind X-Gatekeeper-Overhead-Us)
# p99 under that load, per kind.
# Load: `gk-load run`, closed loop, 64 connections; the two kinds alternate per round.
#
# usage: bench/route.sh [SECONDS_PER_RUN] [ROUNDS]    (defaults 10, 3)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
rounds=${2:-3}
OUT=${OUT:-bench/out/route-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p gatekeeper -p gatekeeper-loadtest
bin=$PWD/target/release

# shellcheck source=bench/lib.sh
. bench/lib.sh
trap cleanup EXIT

# One mock stands in for the four providers (the router's cost is what is measured).
mock=$(start_listening "$OUT/mock" "$bin/gk-load" mock --listen 127.0.0.1:0 --threads 1)
{
    echo "providers:"
    for p in groq openai anthropic deepseek; do
        echo "  - { name: $p, kind: openai_compatible, base_url: \"http://$mock/v1\" }"
    done
    sed -n '/^models:/,/^routing:/p' examples/four-providers.yaml
    echo "audit: { enabled: false }"
} >"$OUT/gatekeeper.yaml"
url=$(GATEKEEPER_LOG=warn start_listening "$OUT/gatekeeper" "$bin/gatekeeper" serve \
    --config "$OUT/gatekeeper.yaml" --listen 127.0.0.1:0 --shards 2 --no-auth)
prompt="What is the capital of France? Answer in one word."
# Sanity: auto in cost mode picks the cheap model for this prompt.
curl -s -o /dev/null -D "$OUT/headers.txt" "http://$url/v1/chat/completions" -H 'Content-Type: application/json' \
    -d "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"$prompt\"}]}"
grep -i '^x-gatekeeper-\(model\|route\)' "$OUT/headers.txt" >&2

# The overhead histogram's cumulative buckets, as "le count" lines.
buckets() {
    curl -s "http://$url/metrics" | awk -F'[{}" ]+' '/^gatekeeper_overhead_seconds_bucket/ {print $3, $NF}'
}
# p99 of the requests between two bucket snapshots, µs (the bucket's upper bound).
p99_between() {
    python3 - "$1" "$2" <<'PY'
import sys
def load(p):
    return {l.split()[0]: float(l.split()[1]) for l in open(p) if l.strip()}
a, b = load(sys.argv[1]), load(sys.argv[2])
d = sorted(((float("inf") if k == "+Inf" else float(k)), b[k] - a.get(k, 0)) for k in b)
total = d[-1][1]
for le, n in d:
    if n >= 0.99 * total:
        print("inf" if le == float("inf") else f"{le * 1e6:.0f}")
        break
PY
}

kinds=(auto fixed)
declare -A model=([auto]=auto [fixed]=gpt-4o-mini)
for r in $(seq 1 "$rounds"); do
    for k in "${kinds[@]}"; do
        buckets >"$OUT/$k-$r.before"
        "$bin/gk-load" run --url "http://$url/v1/chat/completions" --connections 64 --duration "${secs}s" \
            --model "${model[$k]}" --prompt "$prompt" --max-tokens 16 \
            --target-pid "$(cat "$OUT/gatekeeper.pid")" --json "$OUT/$k-$r.json" >/dev/null
        buckets >"$OUT/$k-$r.after"
        p99=$(p99_between "$OUT/$k-$r.before" "$OUT/$k-$r.after")
        jq --arg p99 "$p99" '.overhead_p99_us = $p99' "$OUT/$k-$r.json" >"$OUT/$k-$r.tmp" && mv "$OUT/$k-$r.tmp" "$OUT/$k-$r.json"
        printf '  %-5s round %s: %8.0f req/s (%s ok, %s not 2xx), gateway CPU %.1f us/req, overhead p99 <= %s us\n' \
            "$k" "$r" "$(jq '.rate_achieved' "$OUT/$k-$r.json")" "$(jq '.requests.ok' "$OUT/$k-$r.json")" \
            "$(jq '.requests.completed - .requests.ok' "$OUT/$k-$r.json")" "$(jq '.cpu.target_us_per_request' "$OUT/$k-$r.json")" \
            "$p99" >&2
    done
done

worst() { jq -rs 'map(.overhead_p99_us) | max' "$OUT"/"$1"-*.json; }
python3 - "$(mean auto .rate_achieved)" "$(mean fixed .rate_achieved)" \
    "$(mean auto .cpu.target_us_per_request)" "$(mean fixed .cpu.target_us_per_request)" \
    "$(worst auto)" "$(worst fixed)" <<'PY' | tee "$OUT/summary.md"
import sys
auto, fixed, cpu_a, cpu_f = map(float, sys.argv[1:5])
p_a, p_f = sys.argv[5:7]
print("| model | req/s | gateway CPU µs/req | overhead p99 µs (worst round) |")
print("|---|---|---|---|")
print(f"| fixed (`gpt-4o-mini`) | {fixed:,.0f} | {cpu_f:.1f} | ≤ {p_f} |")
print(f"| `auto`, cost mode | {auto:,.0f} | {cpu_a:.1f} | ≤ {p_a} |")
print(f"\nauto ÷ fixed throughput: **{auto / fixed:.3f}** (goal ≥ 0.95)")
PY
echo "raw results in $OUT" >&2
