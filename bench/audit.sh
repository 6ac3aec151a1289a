#!/usr/bin/env bash
# Cost of the audit log: gateway throughput with audit off, with the embedded file
# log (the default), and with JetStream (a local nats-server), as ratios in one run.
# Load: `gk-load run`, closed loop, 64 connections; configurations alternate per round.
# Besides throughput it reports CPU per request of the gateway, of nats-server and of all
# processes together (generator, mock, gateway, nats-server): on a CPU-bound machine the
# throughput ratio follows the all-process CPU ratio, which is far less noisy.
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

[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p gatekeeper -p gatekeeper-loadtest
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

# CPU seconds (user + system) a process has used so far, from /proc/PID/stat.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
mockpid=$(cat "$OUT/mock.pid")
natspid=$(cat "$OUT/nats.pid")

for r in $(seq 1 "$rounds"); do
    for m in "${modes[@]}"; do
        mock0=$(cpu_s "$mockpid")
        nats0=$(cpu_s "$natspid")
        "$bin/gk-load" run --url "http://${url[$m]}/v1/chat/completions" --connections 64 --duration "${secs}s" \
            --model m --max-tokens 16 --target-pid "$(cat "$OUT/gatekeeper-$m.pid")" --json "$OUT/$m-$r.json" >/dev/null
        # The other processes' share: the mock's, and nats-server's (only JetStream uses it).
        jq --argjson mock "$(cpu_s "$mockpid")" --argjson mock0 "$mock0" \
            --argjson nats "$(cpu_s "$natspid")" --argjson nats0 "$nats0" \
            '.cpu.mock_us_per_request = (($mock - $mock0) * 1e6 / .requests.sent)
             | .cpu.nats_us_per_request = (($nats - $nats0) * 1e6 / .requests.sent)
             | .cpu.machine_us_per_request = (.cpu.generator_us_per_request + .cpu.target_us_per_request
                 + .cpu.mock_us_per_request + .cpu.nats_us_per_request)' \
            "$OUT/$m-$r.json" >"$OUT/$m-$r.tmp" && mv "$OUT/$m-$r.tmp" "$OUT/$m-$r.json"
        printf '  %-9s round %s: %8.0f req/s (%s ok), CPU us/request: gateway %.1f, nats-server %.1f, all %.1f\n' \
            "$m" "$r" "$(jq '.rate_achieved' "$OUT/$m-$r.json")" "$(jq '.requests.ok' "$OUT/$m-$r.json")" \
            "$(jq '.cpu.target_us_per_request' "$OUT/$m-$r.json")" "$(jq '.cpu.nats_us_per_request' "$OUT/$m-$r.json")" \
            "$(jq '.cpu.machine_us_per_request' "$OUT/$m-$r.json")" >&2
    done
done

mean() { jq -s "map($2) | add / length" "$OUT"/"$1"-*.json; }
args=()
for m in "${modes[@]}"; do
    args+=("$(mean "$m" .rate_achieved)" "$(mean "$m" .cpu.target_us_per_request)"
        "$(mean "$m" .cpu.nats_us_per_request)" "$(mean "$m" .cpu.machine_us_per_request)")
done
python3 - "${args[@]}" <<'PY' | tee "$OUT/summary.md"
import sys
v = list(map(float, sys.argv[1:]))
rows = [("off", v[0:4]), ("embedded files", v[4:8]), ("JetStream", v[8:12])]
off_rate, off_all = rows[0][1][0], rows[0][1][3]
print("| audit | req/s | vs off | gateway CPU µs/req | nats-server CPU µs/req | all processes CPU µs/req | off ÷ this, CPU |")
print("|---|---|---|---|---|---|---|")
for name, (rate, gw, nats, total) in rows:
    print(f"| {name} | {rate:,.0f} | {rate / off_rate:.2f} | {gw:.1f} | {nats:.1f} | {total:.1f} | {off_all / total:.2f} |")
PY
echo "raw results in $OUT" >&2
