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
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-5}
rounds=${2:-2}
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
cat >"$OUT/gatekeeper.yaml" <<YAML
providers:
  - { name: mock, kind: openai_compatible, base_url: "http://$mock/v1" }
models:
  - { name: m, provider: mock, upstream_model: m }
keys:
  issuers: [ { public_key: "$public" } ]
audit: { data_dir: "$OUT/data" }
credits: { epoch: day }
YAML
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
echo "raw results in $OUT" >&2
