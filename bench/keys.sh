#!/usr/bin/env bash
# End-to-end key-verification benchmark: gateway throughput when every request
# carries a different key (cache misses: every token is verified, micro-batched)
# against one key for all requests (cache hits), as a ratio in one run.
#
# Setup: one issuer; 10,000 distinct tokens; a per-shard key cache of 1,024 entries,
# so the 10,000 keys, rotated round-robin, miss on every request while the single
# key hits on every request. Load: `gk-load run`, closed loop, 64 connections;
# runs alternate cold/hot for ROUNDS rounds.
#
# usage: bench/keys.sh [SECONDS_PER_RUN] [ROUNDS] [KEYS]    (defaults 10, 2, 10000)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
rounds=${2:-2}
keys=${3:-10000}
OUT=${OUT:-bench/out/keys-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

cargo build --release -q -p gatekeeper -p gatekeeper-loadtest
bin=$PWD/target/release

# shellcheck source=bench/lib.sh
. bench/lib.sh
trap cleanup EXIT

new_issuer
echo "minting $keys keys" >&2
seq 1 "$keys" | xargs -P 2 -I{} "$bin/gatekeeper" keys issue --issuer "$OUT/issuer.key" --jti "bench-{}" \
    --expires 1d >"$OUT/tokens-cold.txt" 2>/dev/null
head -1 "$OUT/tokens-cold.txt" >"$OUT/tokens-hot.txt"

mock=$(start_listening "$OUT/mock" "$bin/gk-load" mock --listen 127.0.0.1:0 --threads 1)
cat >"$OUT/gatekeeper.yaml" <<YAML
providers:
  - { name: mock, kind: openai_compatible, base_url: "http://$mock/v1" }
models:
  - { name: m, provider: mock, upstream_model: m }
keys:
  issuers: [ { public_key: "$public" } ]
  cache_entries_max: 1024
YAML
gk=$(GATEKEEPER_LOG=warn start_listening "$OUT/gatekeeper" "$bin/gatekeeper" serve \
    --config "$OUT/gatekeeper.yaml" --listen 127.0.0.1:0 --shards 2)
gkpid=$(cat "$OUT/gatekeeper.pid")

for kind in cold hot; do
    cat >"$OUT/scenario-$kind.yaml" <<YAML
requests:
  - { weight: 1, model: m, prompt: "Say hello to the gateway", max_tokens: 16, bearer_file: "$OUT/tokens-$kind.txt" }
YAML
done

for r in $(seq 1 "$rounds"); do
    for kind in cold hot; do
        "$bin/gk-load" run --url "http://$gk/v1/chat/completions" --connections 64 --duration "${secs}s" \
            --scenario "$OUT/scenario-$kind.yaml" --target-pid "$gkpid" --json "$OUT/$kind-$r.json" >/dev/null
        printf '  %-4s round %s: %8.0f req/s, %s ok of %s, gateway %.1f us CPU/request\n' "$kind" "$r" \
            "$(jq '.rate_achieved' "$OUT/$kind-$r.json")" "$(jq '.requests.ok' "$OUT/$kind-$r.json")" \
            "$(jq '.requests.completed' "$OUT/$kind-$r.json")" "$(jq '.cpu.target_us_per_request' "$OUT/$kind-$r.json")" >&2
    done
done

cold=$(mean cold .rate_achieved); hot=$(mean hot .rate_achieved)
cold_cpu=$(mean cold .cpu.target_us_per_request); hot_cpu=$(mean hot .cpu.target_us_per_request)
python3 - "$cold" "$hot" "$cold_cpu" "$hot_cpu" "$keys" <<'PY' | tee "$OUT/summary.md"
import sys
cold, hot, cold_cpu, hot_cpu, keys = map(float, sys.argv[1:])
print("| keys | req/s | gateway CPU µs/request |")
print("|---|---|---|")
print(f"| {int(keys):,} distinct (every request verifies) | {cold:,.0f} | {cold_cpu:.1f} |")
print(f"| 1 (cache hit) | {hot:,.0f} | {hot_cpu:.1f} |")
print(f"\ncold/hot throughput ratio: {cold/hot:.2f}; extra CPU per verified key: {cold_cpu-hot_cpu:.1f} µs")
PY
echo "raw results in $OUT" >&2
