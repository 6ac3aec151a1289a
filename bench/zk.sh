#!/usr/bin/env bash
# End-to-end anonymous credits: requests paid with credit spends through the
# `gatekeeper client` sidecar against requests paid with a bearer key straight to the
# gateway, side by side in one run.
#
# Setup: mock provider, one gateway shard (`--shards 1`) with `credits`, a plain key and a
# `zk` key, the sidecar in front of the gateway. Load: `gk-load run`, closed loop, ONE
# connection each (the sidecar pays for one request at a time), runs alternating
# key/credit for ROUNDS rounds. Reported: req/s, p50 latency, and the gateway's CPU per
# request (`--target-pid`), whose inverse is what one shard can serve.
#
# usage: bench/zk.sh [SECONDS_PER_RUN] [ROUNDS]    (defaults 5, 2)
#
# bench/zk.sh pool [SECONDS_PER_RUN] [ROUNDS] [SIDECARS]    (defaults 5, 2, 4)
#   The verify pool against inline verification: two one-shard gateways, one with
#   `credits.verify_threads: 1`, one with `0` (the proof check on the shard), each paid
#   by SIDECARS sidecars (one `zk` key each, one closed-loop connection each) while an
#   open-loop bearer-key load (KEY_RATE req/s, default 200) measures the key requests'
#   latency on the same shard. Runs alternate pool/inline; reported: key p50/p99 and the
#   credit-paid req/s, side by side.
#
# BASELINE=/path/to/old/gatekeeper bench/zk.sh pool [SECONDS_PER_RUN] [ROUNDS] [SIDECARS]
#   The same load against two builds instead: this tree's gateway ("new") and BASELINE's
#   ("base", e.g. main's target/release/gatekeeper copied aside before rebuilding), both
#   with `verify_threads: 1` (the sidecars are this tree's). Runs alternate new/base.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=throughput
if [ "${1:-}" = pool ]; then
    mode=pool
    shift
fi
secs=${1:-5}
rounds=${2:-2}
sidecars=${3:-4}
key_rate=${KEY_RATE:-200}
OUT=${OUT:-bench/out/zk-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

cargo build --release -q -p gatekeeper -p gatekeeper-loadtest
bin=$PWD/target/release

# shellcheck source=bench/lib.sh
. bench/lib.sh
trap cleanup EXIT

new_issuer
plain=$("$bin/gatekeeper" keys issue --issuer "$OUT/issuer.key" --jti bench-plain --expires 1d)
zk=$("$bin/gatekeeper" keys issue --issuer "$OUT/issuer.key" --jti bench-zk --zk --zk-credits 100000000 --expires 1d)

mock=$(start_listening "$OUT/mock" "$bin/gk-load" mock --listen 127.0.0.1:0 --threads 1)

# gateway_config FILE DATA_DIR [CREDITS_KEYS]: one mock model, this run's key issuer,
# credits by the day (plus CREDITS_KEYS, e.g. ", verify_threads: 0").
gateway_config() {
    cat >"$1" <<YAML
providers:
  - { name: mock, kind: openai_compatible, base_url: "http://$mock/v1" }
models:
  - { name: m, provider: mock, upstream_model: m }
keys:
  issuers: [ { public_key: "$public" } ]
audit: { data_dir: "$2" }
credits: { epoch: day${3:-} }
YAML
}

if [ "$mode" = pool ]; then
    p99='(.latency_us.percentiles[] | select(.p == 99) | .us)'
    p50='(.latency_us.percentiles[] | select(.p == 50) | .us)'
    variants="pool inline"
    labels=("verify pool (\`verify_threads: 1\`)" "inline (\`verify_threads: 0\`)")
    if [ -n "${BASELINE:-}" ]; then
        variants="new base"
        labels=("this tree" "baseline ($BASELINE)")
    fi
    for variant in $variants; do
        threads=1
        gw_bin=$bin/gatekeeper
        case $variant in
            inline) threads=0 ;;
            base) gw_bin=$BASELINE ;;
        esac
        gateway_config "$OUT/$variant.yaml" "$OUT/data-$variant" ", verify_threads: $threads"
        addr=$(GATEKEEPER_LOG=warn start_listening "$OUT/gw-$variant" "$gw_bin" serve \
            --config "$OUT/$variant.yaml" --listen 127.0.0.1:0 --shards 1)
        eval "gw_$variant=$addr"
        for i in $(seq 1 "$sidecars"); do
            k=$("$bin/gatekeeper" keys issue --issuer "$OUT/issuer.key" --jti "bench-$variant-$i" --zk \
                --zk-credits 4000000000 --expires 1d)
            a=$(GATEKEEPER_LOG=warn start_listening "$OUT/side-$variant-$i" "$bin/gatekeeper" client \
                --gateway "http://$addr" --key "$k" --listen 127.0.0.1:0 --wallet "$OUT/wallet-$variant-$i")
            echo "$a" >>"$OUT/sidecars-$variant"
        done
    done
    for r in $(seq 1 "$rounds"); do
        for variant in $variants; do
            eval "gw=\$gw_$variant"
            pids=()
            i=0
            while read -r a; do
                i=$((i + 1))
                "$bin/gk-load" run --url "http://$a/v1/chat/completions" --connections 1 --duration "${secs}s" \
                    --model m --max-tokens 16 --json "$OUT/credit-$variant-$r-$i.json" >/dev/null &
                pids+=($!)
            done <"$OUT/sidecars-$variant"
            "$bin/gk-load" run --url "http://$gw/v1/chat/completions" --rate "$key_rate" --duration "${secs}s" \
                --model m --max-tokens 16 --bearer "$plain" --json "$OUT/key-$variant-$r.json" >/dev/null
            wait "${pids[@]}"
            credit_rate=$(jq -s 'map(.rate_achieved) | add' "$OUT"/credit-"$variant"-"$r"-*.json)
            echo "{\"credit_rate\": $credit_rate}" >"$OUT/creditsum-$variant-$r.json"
            printf '  %-6s round %s: key p50 %s us, p99 %s us; credit-paid %.1f req/s\n' "$variant" "$r" \
                "$(jq "$p50" "$OUT/key-$variant-$r.json")" "$(jq "$p99" "$OUT/key-$variant-$r.json")" \
                "$credit_rate" >&2
        done
    done
    read -r v1 v2 <<<"$variants"
    python3 - "$(mean "key-$v1" "$p50")" "$(mean "key-$v1" "$p99")" "$(mean "creditsum-$v1" .credit_rate)" \
        "$(mean "key-$v2" "$p50")" "$(mean "key-$v2" "$p99")" "$(mean "creditsum-$v2" .credit_rate)" \
        "$sidecars" "$key_rate" "$v1" "$v2" "${labels[0]}" "${labels[1]}" <<'PY' | tee "$OUT/summary.md"
import sys
pp50, pp99, prate, ip50, ip99, irate = map(float, sys.argv[1:7])
n, kr, v1, v2, l1, l2 = sys.argv[7:13]
print(f"| one shard, {n} sidecars paying + bearer keys at {kr} req/s | key p50 | key p99 | credit-paid req/s |")
print("|---|---|---|---|")
print(f"| {l1} | {pp50/1000:.2f} ms | {pp99/1000:.2f} ms | {prate:,.1f} |")
print(f"| {l2} | {ip50/1000:.2f} ms | {ip99/1000:.2f} ms | {irate:,.1f} |")
print(f"\nkey p99 {v2}/{v1}: {ip99/pp99:.2f}x; key p50 {v2}/{v1}: {ip50/pp50:.2f}x")
PY
    echo "raw results in $OUT" >&2
    exit 0
fi
gateway_config "$OUT/gatekeeper.yaml" "$OUT/data"
gk=$(GATEKEEPER_LOG=warn start_listening "$OUT/gatekeeper" "$bin/gatekeeper" serve \
    --config "$OUT/gatekeeper.yaml" --listen 127.0.0.1:0 --shards 1)
gkpid=$(cat "$OUT/gatekeeper.pid")
side=$(GATEKEEPER_LOG=warn start_listening "$OUT/client" "$bin/gatekeeper" client \
    --gateway "http://$gk" --key "$zk" --listen 127.0.0.1:0 --wallet "$OUT/wallet")

for r in $(seq 1 "$rounds"); do
    for kind in key credit; do
        case $kind in
            key) url="http://$gk/v1/chat/completions"; auth=(--bearer "$plain") ;;
            credit) url="http://$side/v1/chat/completions"; auth=() ;;
        esac
        "$bin/gk-load" run --url "$url" --connections 1 --duration "${secs}s" --model m --max-tokens 16 \
            "${auth[@]}" --target-pid "$gkpid" --json "$OUT/$kind-$r.json" >/dev/null
        printf '  %-6s round %s: %8.1f req/s, p50 %s us, gateway %.1f us CPU/request\n' "$kind" "$r" \
            "$(jq '.rate_achieved' "$OUT/$kind-$r.json")" "$(jq '.latency_us.percentiles[] | select(.p == 50) | .us' "$OUT/$kind-$r.json")" \
            "$(jq '.cpu.target_us_per_request' "$OUT/$kind-$r.json")" >&2
    done
done

python3 - "$(mean key .rate_achieved)" "$(mean credit .rate_achieved)" "$(mean key "(.latency_us.percentiles[] | select(.p == 50) | .us)")" \
    "$(mean credit "(.latency_us.percentiles[] | select(.p == 50) | .us)")" "$(mean key .cpu.target_us_per_request)" \
    "$(mean credit .cpu.target_us_per_request)" <<'PY' | tee "$OUT/summary.md"
import sys
kr, cr, kp, cp, kc, cc = map(float, sys.argv[1:])
print("| paid with | req/s (1 connection) | p50 latency | gateway CPU µs/request | one shard's ceiling |")
print("|---|---|---|---|---|")
print(f"| bearer key, direct | {kr:,.1f} | {kp/1000:.2f} ms | {kc:,.0f} | {1e6/kc:,.0f} req/s |")
print(f"| credit spend, via sidecar | {cr:,.1f} | {cp/1000:.2f} ms | {cc:,.0f} | {1e6/cc:,.0f} req/s |")
print(f"\ncredit/key: throughput (1 connection) {cr/kr:.3f}, per-shard ceiling {kc/cc:.4f}; "
      f"added latency (sidecar + proof + verification) {(cp-kp)/1000:.2f} ms")
PY
# The sidecar's own share of the added latency, apart: its X-Gatekeeper-Client-Overhead-Us
# (request read, proof, wallet writes, change; the wait on the gateway excluded), 200 samples.
for _ in $(seq 1 200); do
    curl -s -o /dev/null -D - "http://$side/v1/chat/completions" -H 'Content-Type: application/json' \
        -d '{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}' |
        tr -d '\r' | awk -F': ' 'tolower($1) == "x-gatekeeper-client-overhead-us" {print $2}'
done | sort -n | awk '{a[NR]=$1} END {printf "sidecar own time per request: p50 %d us, p90 %d us (n=%d)\n", a[int(NR*0.5)], a[int(NR*0.9)], NR}' |
    tee -a "$OUT/summary.md"
echo "raw results in $OUT" >&2
