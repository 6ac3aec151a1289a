#!/usr/bin/env bash
# Two builds of the gateway side by side, in one run: this checkout's release build
# (`head`) and another binary (`base`, e.g. the commit before a change, built in a
# `git worktree`), same config, same mock, driven in alternating rounds by `gk-load run`
# (closed loop, 64 connections). Prints req/s and the gateway's CPU per request for each,
# and the ratio head ÷ base. Nothing else but the generator and the mock runs beside them.
#
# usage: BASELINE=/path/to/gatekeeper bench/ab.sh [SECONDS_PER_RUN] [ROUNDS]   (defaults 10, 3)
# env:   CONFIG_EXTRA: YAML lines appended to both configs (default: audit off);
#        MODEL / PROMPT: the request (default model `m`, a one-line question).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
rounds=${2:-3}
: "${BASELINE:?set BASELINE to the other gatekeeper binary}"
OUT=${OUT:-bench/out/ab-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p gatekeeper -p gatekeeper-loadtest
bin=$PWD/target/release

# shellcheck source=bench/lib.sh
. bench/lib.sh
trap cleanup EXIT

mock=$(start_listening "$OUT/mock" "$bin/gk-load" mock --listen 127.0.0.1:0 --threads 1)
# CONFIG_EXTRA="" runs both with the audit log on (the default), each in a data dir of its own.
extra=${CONFIG_EXTRA-"audit: { enabled: false }"}
declare -A url
for k in head base; do
    exe=$bin/gatekeeper
    [ "$k" = base ] && exe=$BASELINE
    own=$extra
    [ -n "$own" ] || own="audit: { data_dir: \"$OUT/data-$k\" }"
    cat >"$OUT/$k.yaml" <<YAML
providers:
  - { name: mock, kind: openai_compatible, base_url: "http://$mock/v1" }
models:
  - { name: m, provider: mock, upstream_model: m }
$own
YAML
    url[$k]=$(GATEKEEPER_LOG=warn start_listening "$OUT/$k" "$exe" serve \
        --config "$OUT/$k.yaml" --listen 127.0.0.1:0 --shards 2 --no-auth)
done

for r in $(seq 1 "$rounds"); do
    for k in head base; do
        "$bin/gk-load" run --url "http://${url[$k]}/v1/chat/completions" --connections 64 --duration "${secs}s" \
            --model "${MODEL:-m}" --prompt "${PROMPT:-What is the capital of France? Answer in one word.}" \
            --max-tokens 16 --target-pid "$(cat "$OUT/$k.pid")" --json "$OUT/$k-$r.json" >/dev/null
        printf '  %-4s round %s: %8.0f req/s (%s not 2xx), gateway CPU %.1f us/req\n' "$k" "$r" \
            "$(jq '.rate_achieved' "$OUT/$k-$r.json")" "$(jq '.requests.completed - .requests.ok' "$OUT/$k-$r.json")" \
            "$(jq '.cpu.target_us_per_request' "$OUT/$k-$r.json")" >&2
    done
done

python3 - "$(mean head .rate_achieved)" "$(mean base .rate_achieved)" \
    "$(mean head .cpu.target_us_per_request)" "$(mean base .cpu.target_us_per_request)" <<'PY' | tee "$OUT/summary.md"
import sys
h, b, ch, cb = map(float, sys.argv[1:5])
print("| build | req/s | gateway CPU µs/req |")
print("|---|---|---|")
print(f"| base | {b:,.0f} | {cb:.1f} |")
print(f"| head | {h:,.0f} | {ch:.1f} |")
print(f"\nhead ÷ base throughput: **{h / b:.3f}**; CPU per request head ÷ base: {ch / cb:.3f}")
PY
echo "raw results in $OUT" >&2
