#!/usr/bin/env bash
# Cost of the audit log: gateway throughput with audit off, with the embedded file
# log (the default), and with JetStream (a local nats-server), as ratios in one run.
# Load: `gk-load run`, closed loop, 64 connections; configurations alternate per round.
#
# usage: bench/audit.sh [SECONDS_PER_RUN] [ROUNDS]    (defaults 10, 3)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
rounds=${2:-3}
OUT=${OUT:-bench/out/audit-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
NATS=${NATS:-$(command -v nats-server || echo /usr/sbin/nats-server)}

cargo build --release -q -p gatekeeper -p gatekeeper-loadtest
bin=$PWD/target/release

# shellcheck source=bench/lib.sh
. bench/lib.sh
trap cleanup EXIT

natsport=$(free_port)
mkdir -p "$OUT/nats"
"$NATS" -a 127.0.0.1 -p "$natsport" -js -sd "$OUT/nats" >"$OUT/nats.log" 2>&1 &
echo $! >"$OUT/nats.pid"
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$natsport") 2>/dev/null && break; sleep 0.05; done

mock=$(start_listening "$OUT/mock" "$bin/gk-load" mock --listen 127.0.0.1:0 --threads 1)
declare -A extra=(
    [off]="audit: { enabled: false }"
    [files]="audit: { data_dir: \"$OUT/data-files\" }"
    [jetstream]="audit: { data_dir: \"$OUT/data-js\" }
nats: { url: \"nats://127.0.0.1:$natsport\" }"
)
modes=(off files jetstream)
declare -A url
for m in "${modes[@]}"; do
    cat >"$OUT/gatekeeper-$m.yaml" <<YAML
providers:
  - { name: mock, kind: openai_compatible, base_url: "http://$mock/v1" }
models:
  - { name: m, provider: mock, upstream_model: m }
${extra[$m]}
YAML
    url[$m]=$(GATEKEEPER_LOG=warn start_listening "$OUT/gatekeeper-$m" "$bin/gatekeeper" serve \
        --config "$OUT/gatekeeper-$m.yaml" --listen 127.0.0.1:0 --shards 2 --no-auth)
done

for r in $(seq 1 "$rounds"); do
    for m in "${modes[@]}"; do
        "$bin/gk-load" run --url "http://${url[$m]}/v1/chat/completions" --connections 64 --duration "${secs}s" \
            --model m --max-tokens 16 --target-pid "$(cat "$OUT/gatekeeper-$m.pid")" --json "$OUT/$m-$r.json" >/dev/null
        printf '  %-9s round %s: %8.0f req/s (%s ok), gateway %.1f us CPU/request\n' "$m" "$r" \
            "$(jq '.rate_achieved' "$OUT/$m-$r.json")" "$(jq '.requests.ok' "$OUT/$m-$r.json")" \
            "$(jq '.cpu.target_us_per_request' "$OUT/$m-$r.json")" >&2
    done
done

mean() { jq -s "map($2) | add / length" "$OUT"/"$1"-*.json; }
python3 - "$(mean off .rate_achieved)" "$(mean files .rate_achieved)" "$(mean jetstream .rate_achieved)" \
    "$(mean off .cpu.target_us_per_request)" "$(mean files .cpu.target_us_per_request)" \
    "$(mean jetstream .cpu.target_us_per_request)" <<'PY' | tee "$OUT/summary.md"
import sys
off, files, js, c_off, c_files, c_js = map(float, sys.argv[1:])
print("| audit | req/s | vs off | gateway CPU µs/request |")
print("|---|---|---|---|")
for name, v, c in (("off", off, c_off), ("embedded files", files, c_files), ("JetStream", js, c_js)):
    print(f"| {name} | {v:,.0f} | {v/off:.2f} | {c:.1f} |")
PY
echo "raw results in $OUT" >&2
