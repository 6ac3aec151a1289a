#!/usr/bin/env bash
# Cost of the audit log: gateway throughput with audit off, with the embedded file
# log (the default), and with JetStream (a local nats-server), as ratios in one run.
# Load: `gk-load run`, closed loop, 64 connections; configurations alternate per round.
# Besides throughput it reports CPU per request of the gateway, of nats-server and of all
# processes together (generator, mock, gateway, nats-server): on a CPU-bound machine the
# throughput ratio follows the all-process CPU ratio, which is far less noisy.
#
# Knobs (issue 15), as more modes beside the three above, chosen with MODES:
#   nice  — embedded files, `bridge: { nice: 10 }` (the bridge yields to the shards)
#   own   — embedded files, 1 shard on CPU 0 and `bridge: { cpu: 1 }` (a core of its own)
#   base  — embedded files, run by the binary in BASELINE (another build, e.g. main's)
# GK_CONFIG=FILE appends that file's gatekeeper.yaml keys to every mode's config.
# RATE=N (req/s) or RATE=auto (half of the `off` mode's max) adds an open-loop phase per
# round after the throughput runs and reports p50/p99 per mode (latency from intended
# send time, so queueing counts).
#
# usage: [MODES="off files nice own base"] [BASELINE=FILE] [RATE=auto] [GK_CONFIG=FILE] bench/audit.sh [SECONDS_PER_RUN] [ROUNDS]
#        (defaults: MODES="off files jetstream", no open-loop phase, 10 s, 3 rounds)
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
    [nice]="audit: { data_dir: \"$OUT/data-nice\" }
bridge: { nice: 10 }"
    [own]="audit: { data_dir: \"$OUT/data-own\" }
cpus: [0]
bridge: { cpu: 1 }"
    [base]="audit: { data_dir: \"$OUT/data-base\" }"
)
declare -A shards=([off]=2 [files]=2 [jetstream]=2 [nice]=2 [own]=1 [base]=2)
read -r -a modes <<<"${MODES:-off files jetstream}"
for m in "${modes[@]}"; do
    [ -n "${extra[$m]+x}" ] || { echo "unknown mode $m (off files jetstream nice own base)" >&2; exit 2; }
    [ "$m" != base ] || [ -x "${BASELINE:-}" ] || { echo "mode base needs BASELINE=/path/to/gatekeeper" >&2; exit 2; }
done
declare -A url
for m in "${modes[@]}"; do
    cat >"$OUT/gatekeeper-$m.yaml" <<YAML
providers:
  - { name: mock, kind: openai_compatible, base_url: "http://$mock/v1" }
models:
  - { name: m, provider: mock, upstream_model: m }
${extra[$m]}
YAML
    [ -z "${GK_CONFIG:-}" ] || cat "$GK_CONFIG" >>"$OUT/gatekeeper-$m.yaml"
    exe=$bin/gatekeeper
    [ "$m" != base ] || exe=$BASELINE
    url[$m]=$(GATEKEEPER_LOG=warn start_listening "$OUT/gatekeeper-$m" "$exe" serve \
        --config "$OUT/gatekeeper-$m.yaml" --listen 127.0.0.1:0 --shards "${shards[$m]}" --no-auth)
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

mean() { jq -s "map($2) | add / length" "$OUT"/"$1"-[0-9]*.json; }

# Open-loop phase: every mode at one rate, alternating per round.
if [ -n "${RATE:-}" ]; then
    rate=$RATE
    if [ "$rate" = auto ]; then
        base=${modes[0]}
        rate=$(python3 -c "print(max(1, int($(mean "$base" .rate_achieved) / 2)))")
        echo "open loop at $rate req/s (half of $base's max)" >&2
    fi
    for r in $(seq 1 "$rounds"); do
        for m in "${modes[@]}"; do
            "$bin/gk-load" run --url "http://${url[$m]}/v1/chat/completions" --rate "$rate" --duration "${secs}s" \
                --model m --max-tokens 16 --json "$OUT/$m-lat-$r.json" >/dev/null
            printf '  %-9s round %s: p50 %.3f ms, p99 %.3f ms at %s req/s\n' "$m" "$r" \
                "$(jq '[.latency_us.percentiles[] | select(.p >= 50)][0].us / 1000' "$OUT/$m-lat-$r.json")" \
                "$(jq '[.latency_us.percentiles[] | select(.p >= 99)][0].us / 1000' "$OUT/$m-lat-$r.json")" "$rate" >&2
        done
    done
fi

args=()
for m in "${modes[@]}"; do
    p50=nan p99=nan
    if [ -n "${RATE:-}" ]; then
        p50=$(jq -s 'map([.latency_us.percentiles[] | select(.p >= 50)][0].us) | add / length / 1000' "$OUT/$m"-lat-*.json)
        p99=$(jq -s 'map([.latency_us.percentiles[] | select(.p >= 99)][0].us) | add / length / 1000' "$OUT/$m"-lat-*.json)
    fi
    args+=("$m" "$(mean "$m" .rate_achieved)" "$(mean "$m" .cpu.target_us_per_request)"
        "$(mean "$m" .cpu.nats_us_per_request)" "$(mean "$m" .cpu.machine_us_per_request)" "$p50" "$p99")
done
python3 - "${args[@]}" <<'PY' | tee "$OUT/summary.md"
import math, sys
a = sys.argv[1:]
names = {"off": "off", "files": "embedded files", "jetstream": "JetStream",
         "nice": "files, bridge nice 10", "own": "files, 1 shard + bridge own CPU",
         "base": "embedded files, BASELINE build"}
rows = [(a[i], *map(float, a[i + 1:i + 7])) for i in range(0, len(a), 7)]
base_rate, base_all, base_p99 = rows[0][1], rows[0][4], rows[0][6]
lat = not math.isnan(base_p99)
head = "| audit | req/s | vs " + rows[0][0] + " | gateway CPU µs/req | nats-server CPU µs/req | all processes CPU µs/req | " + rows[0][0] + " ÷ this, CPU |"
print(head + (" p50 ms | p99 ms | p99 vs " + rows[0][0] + " |" if lat else ""))
print("|---" * (7 + (3 if lat else 0)) + "|")
for m, rate, gw, nats, total, p50, p99 in rows:
    line = f"| {names[m]} | {rate:,.0f} | {rate / base_rate:.2f} | {gw:.1f} | {nats:.1f} | {total:.1f} | {base_all / total:.2f} |"
    if lat:
        line += f" {p50:.3f} | {p99:.3f} | {p99 / base_p99:.2f} |"
    print(line)
PY
echo "raw results in $OUT" >&2
