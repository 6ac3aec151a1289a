#!/usr/bin/env bash
# End-to-end cost of token budgets (issue 13): gateway throughput when every request is
# budgeted against none, as a ratio in one run (goal ≥ 0.95).
#
# One gateway (2 shards, audit off), one mock, two keys from one issuer, alternated
# round by round: `plain` carries no budget claim (the budget step admits it unmetered);
# `budgeted` carries tokens_per_minute, tokens_per_day, tokens_per_month, usd_per_month
# and rpm, all far above what a run spends, and belongs to tenant `acme`, which has
# limits of its own in the config, so every request is checked against two rows (key
# and tenant), reserved in every window and settled to its usage. Same process, same
# warm state: only the key differs. Load: `gk-load run`, closed loop, 64 connections.
#
# usage: bench/budget.sh [SECONDS_PER_RUN] [ROUNDS]    (defaults 10, 3)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
rounds=${2:-3}
OUT=${OUT:-bench/out/budget-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p gatekeeper -p gatekeeper-loadtest
bin=$PWD/target/release

# shellcheck source=bench/lib.sh
. bench/lib.sh
trap cleanup EXIT

new_issuer
big=1000000000000000
"$bin/gatekeeper" keys issue --issuer "$OUT/issuer.key" --jti bench-plain --expires 1d >"$OUT/tokens-plain.txt"
"$bin/gatekeeper" keys issue --issuer "$OUT/issuer.key" --jti bench-budgeted --tenant acme --expires 1d \
    --tokens-per-minute $big --tokens-per-day $big --tokens-per-month $big --usd-per-month 1000000000 \
    --rpm $big >"$OUT/tokens-budgeted.txt"

mock=$(start_listening "$OUT/mock" "$bin/gk-load" mock --listen 127.0.0.1:0 --threads 1)
cat >"$OUT/gatekeeper.yaml" <<YAML
providers:
  - { name: mock, kind: openai_compatible, base_url: "http://$mock/v1" }
models:
  - { name: m, provider: mock, upstream_model: m, price_per_1k_input: 0.00015, price_per_1k_output: 0.0006 }
keys:
  issuers: [ { public_key: "$public" } ]
audit: { enabled: false, data_dir: "$OUT/data" }
budgets: { tenants: { acme: { tokens_per_minute: $big, tokens_per_day: $big, rpm: $big } } }
YAML
gk=$(GATEKEEPER_LOG=warn start_listening "$OUT/gatekeeper" "$bin/gatekeeper" serve \
    --config "$OUT/gatekeeper.yaml" --listen 127.0.0.1:0 --shards 2)
gkpid=$(cat "$OUT/gatekeeper.pid")

for kind in plain budgeted; do
    cat >"$OUT/scenario-$kind.yaml" <<YAML
requests:
  - { weight: 1, model: m, prompt: "Say hello to the gateway", max_tokens: 16, bearer_file: "$OUT/tokens-$kind.txt" }
YAML
done

for r in $(seq 1 "$rounds"); do
    for kind in plain budgeted; do
        "$bin/gk-load" run --url "http://$gk/v1/chat/completions" --connections 64 --duration "${secs}s" \
            --scenario "$OUT/scenario-$kind.yaml" --target-pid "$gkpid" --json "$OUT/$kind-$r.json" >/dev/null
        printf '  %-8s round %s: %8.0f req/s, %s ok of %s, gateway %.1f us CPU/request\n' "$kind" "$r" \
            "$(jq '.rate_achieved' "$OUT/$kind-$r.json")" "$(jq '.requests.ok' "$OUT/$kind-$r.json")" \
            "$(jq '.requests.completed' "$OUT/$kind-$r.json")" "$(jq '.cpu.target_us_per_request' "$OUT/$kind-$r.json")" >&2
    done
done

python3 - "$(mean plain .rate_achieved)" "$(mean budgeted .rate_achieved)" \
    "$(mean plain .cpu.target_us_per_request)" "$(mean budgeted .cpu.target_us_per_request)" <<'PY' | tee "$OUT/summary.md"
import sys
p, b, cp, cb = map(float, sys.argv[1:5])
print("| requests | req/s | gateway CPU µs/req |")
print("|---|---|---|")
print(f"| no budget | {p:,.0f} | {cp:.1f} |")
print(f"| budgeted (key + tenant, 3 windows, rpm, USD) | {b:,.0f} | {cb:.1f} |")
print(f"\nbudgeted ÷ none throughput: **{b / p:.3f}**; CPU per request budgeted − none: {cb - cp:+.1f} µs")
PY
echo "raw results in $OUT" >&2
