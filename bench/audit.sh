#!/usr/bin/env bash
# Cost of the audit log: gateway throughput with audit off, with the embedded file
# log (the default), and with JetStream (a local nats-server), as ratios in one run.
# Load: `gk-load run`, closed loop, 64 connections; configurations alternate per round.
# Besides throughput it reports CPU per request of the gateway, of nats-server and of all
# processes together (generator, mock, gateway, nats-server): on a CPU-bound machine the
# throughput ratio follows the all-process CPU ratio, which is far less noisy.
#
# Knobs (issue 15), as more modes beside the three above, chosen with MODES:
#   normal — embedded files, `bridge: { policy: normal }` (the default `auto` runs the
#           bridge SCHED_IDLE: this is the bridge as an ordinary thread)
#   nice  — embedded files, `bridge: { nice: 10 }` (a normal thread at a lower priority)
#   own   — embedded files, 1 shard on CPU 0 and `bridge: { cpu: 1 }` (a core of its own)
#   base  — embedded files, run by the binary in BASELINE (another build, e.g. main's)
#   tuned — embedded files with more `audit:` keys from TUNED_AUDIT (e.g.
#           TUNED_AUDIT="batch_wait_ms: 10") and more top-level YAML from TUNED_YAML
#   nginx — nginx (2 workers, upstream keepalive) in front of the same mock: the peer
#           item 5 of issue 15 measures against (`apt-get install nginx`)
# GK_CONFIG=FILE appends that file's gatekeeper.yaml keys to every mode's config.
# RATE=N (req/s) or RATE=auto (half of the `off` mode's max) adds an open-loop phase per
# round after the throughput runs and reports p50/p99 per mode (latency from intended
# send time, so queueing counts). With `nginx` first in MODES, `RATE=auto` is half of
# nginx's max: the whole of item 5 in one run is
#   MODES="nginx off files" RATE=auto bench/audit.sh 8 3
# CPU per request is reported for the gateway (nginx: its workers), for all the
# benchmark's processes, and for the whole machine from /proc/stat (every process and
# kernel thread: the WAL's and chain file's write-back by kworkers counts there), with
# the kernel's part (system + irq + softirq) of it.
#
# usage: [MODES="nginx off files normal nice own base"] [BASELINE=FILE] [RATE=auto] [GK_CONFIG=FILE] bench/audit.sh [SECONDS_PER_RUN] [ROUNDS]
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
    [nginx]=""
    [off]="audit: { enabled: false }"
    [files]="audit: { data_dir: \"$OUT/data-files\" }"
    [jetstream]="audit: { data_dir: \"$OUT/data-js\" }
nats: { url: \"nats://127.0.0.1:$natsport\" }"
    [normal]="audit: { data_dir: \"$OUT/data-normal\" }
bridge: { policy: normal }"
    [nice]="audit: { data_dir: \"$OUT/data-nice\" }
bridge: { nice: 10 }"
    [own]="audit: { data_dir: \"$OUT/data-own\" }
cpus: [0]
bridge: { cpu: 1 }"
    [base]="audit: { data_dir: \"$OUT/data-base\" }"
    [tuned]="audit: { data_dir: \"$OUT/data-tuned\"${TUNED_AUDIT:+, $TUNED_AUDIT} }
${TUNED_YAML:-}"
)
declare -A shards=([nginx]=2 [off]=2 [files]=2 [jetstream]=2 [normal]=2 [nice]=2 [own]=1 [base]=2 [tuned]=2)
read -r -a modes <<<"${MODES:-off files jetstream}"
for m in "${modes[@]}"; do
    [ -n "${extra[$m]+x}" ] || { echo "unknown mode $m (nginx off files jetstream normal nice own base tuned)" >&2; exit 2; }
    [ "$m" != nginx ] || command -v nginx >/dev/null || { echo "mode nginx needs nginx: apt-get install nginx" >&2; exit 2; }
    [ "$m" != base ] || [ -x "${BASELINE:-}" ] || { echo "mode base needs BASELINE=/path/to/gatekeeper" >&2; exit 2; }
done
declare -A url
for m in "${modes[@]}"; do
    if [ "$m" = nginx ]; then
        ngport=$(start_nginx "$OUT/nginx" "$mock")
        url[$m]=127.0.0.1:$ngport
        continue
    fi
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
# The same for a mode's server: the gateway, or nginx's master and workers.
server_cpu_s() {
    local pids=$(cat "$OUT/gatekeeper-$1.pid" 2>/dev/null || true)
    [ "$1" != nginx ] || pids="$(cat "$OUT/nginx/nginx.pid") $(pgrep -P "$(cat "$OUT/nginx/nginx.pid")" | tr '\n' ' ')"
    local sum=0 p
    for p in $pids; do sum=$(python3 -c "print($sum + $(cpu_s "$p"))"); done
    echo "$sum"
}
# A gateway's minor page faults and the bytes it dirtied for the disk less those it
# dropped before write-back (/proc/PID/stat field 10, /proc/PID/io): counts, so unlike
# CPU time they do not move with the machine's load. "0 0" for nginx.
server_io() {
    local pid
    pid=$(cat "$OUT/gatekeeper-$1.pid" 2>/dev/null) || { echo "0 0"; return; }
    echo "$(awk '{print $10}' "/proc/$pid/stat") $(awk '/^write_bytes/{w=$2} /^cancelled_write_bytes/{c=$2} END{print w - c}' "/proc/$pid/io")"
}
# The whole machine's busy and kernel CPU seconds so far (all CPUs), from /proc/stat.
machine_cpu_s() { awk -v t="$(getconf CLK_TCK)" '/^cpu /{print ($2+$3+$4+$7+$8+$9) / t, ($4+$7+$8) / t}' /proc/stat; }
mockpid=$(cat "$OUT/mock.pid")
natspid=$(cat "$OUT/nats.pid")

for r in $(seq 1 "$rounds"); do
    for m in "${modes[@]}"; do
        mock0=$(cpu_s "$mockpid")
        nats0=$(cpu_s "$natspid")
        server0=$(server_cpu_s "$m")
        read -r busy0 kernel0 < <(machine_cpu_s)
        read -r flt0 disk0 < <(server_io "$m")
        "$bin/gk-load" run --url "http://${url[$m]}/v1/chat/completions" --connections "${CONNECTIONS:-64}" --duration "${secs}s" \
            --model m --max-tokens 16 --json "$OUT/$m-$r.json" >/dev/null
        read -r busy1 kernel1 < <(machine_cpu_s)
        read -r flt1 disk1 < <(server_io "$m")
        # The other processes' share: the mock's, and nats-server's (only JetStream uses it).
        jq --argjson mock "$(cpu_s "$mockpid")" --argjson mock0 "$mock0" \
            --argjson nats "$(cpu_s "$natspid")" --argjson nats0 "$nats0" \
            --argjson server "$(server_cpu_s "$m")" --argjson server0 "$server0" \
            --argjson busy "$busy1" --argjson busy0 "$busy0" --argjson kernel "$kernel1" --argjson kernel0 "$kernel0" \
            --argjson flt "$((flt1 - flt0))" --argjson disk "$((disk1 - disk0))" \
            --arg load "$(cut -d' ' -f1 /proc/loadavg)" \
            '.cpu.target_us_per_request = (($server - $server0) * 1e6 / .requests.sent)
             | .cpu.mock_us_per_request = (($mock - $mock0) * 1e6 / .requests.sent)
             | .cpu.nats_us_per_request = (($nats - $nats0) * 1e6 / .requests.sent)
             | .cpu.all_us_per_request = (.cpu.generator_us_per_request + .cpu.target_us_per_request
                 + .cpu.mock_us_per_request + .cpu.nats_us_per_request)
             | .cpu.system_us_per_request = (($busy - $busy0) * 1e6 / .requests.sent)
             | .cpu.kernel_us_per_request = (($kernel - $kernel0) * 1e6 / .requests.sent)
             | .io.minor_faults_per_request = ($flt / .requests.sent)
             | .io.disk_bytes_per_request = ($disk / .requests.sent)
             | .load_average_1m = ($load | tonumber)' \
            "$OUT/$m-$r.json" >"$OUT/$m-$r.tmp" && mv "$OUT/$m-$r.tmp" "$OUT/$m-$r.json"
        printf '  %-9s round %s: %8.0f req/s (%s ok), CPU us/request: server %.1f, nats-server %.1f, all %.1f, machine %.1f (kernel %.1f); per request %.3f faults, %.0f disk bytes; load %s\n' \
            "$m" "$r" "$(jq '.rate_achieved' "$OUT/$m-$r.json")" "$(jq '.requests.ok' "$OUT/$m-$r.json")" \
            "$(jq '.cpu.target_us_per_request' "$OUT/$m-$r.json")" "$(jq '.cpu.nats_us_per_request' "$OUT/$m-$r.json")" \
            "$(jq '.cpu.all_us_per_request' "$OUT/$m-$r.json")" "$(jq '.cpu.system_us_per_request' "$OUT/$m-$r.json")" \
            "$(jq '.cpu.kernel_us_per_request' "$OUT/$m-$r.json")" "$(jq '.io.minor_faults_per_request' "$OUT/$m-$r.json")" \
            "$(jq '.io.disk_bytes_per_request' "$OUT/$m-$r.json")" "$(jq '.load_average_1m' "$OUT/$m-$r.json")" >&2
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
    # Unmeasured warm-up at the rate: the generator opens its keep-alive connections
    # (lazily, as slots need them) and the servers their upstream ones, so the rounds
    # measure the steady state, not a burst of connects.
    for m in "${modes[@]}"; do
        "$bin/gk-load" run --url "http://${url[$m]}/v1/chat/completions" --rate "$rate" --duration "${WARMUP_S:-2}s" \
            --model m --max-tokens 16 >/dev/null
    done
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
        "$(mean "$m" .cpu.nats_us_per_request)" "$(mean "$m" .cpu.all_us_per_request)"
        "$(mean "$m" .cpu.system_us_per_request)" "$(mean "$m" .cpu.kernel_us_per_request)"
        "$(mean "$m" .io.minor_faults_per_request)" "$(mean "$m" .io.disk_bytes_per_request)" "$p50" "$p99")
done
echo "load average (1, 5, 15 min) at the start of the summary: $(cut -d' ' -f1-3 /proc/loadavg); mean 1-min load over the throughput runs: $(for m in "${modes[@]}"; do cat "$OUT/$m"-[0-9]*.json; done | jq -s 'map(.load_average_1m) | add / length')" | tee "$OUT/load.txt" >&2
python3 - "${args[@]}" <<'PY' | tee "$OUT/summary.md"
import math, sys
a = sys.argv[1:]
names = {"nginx": "nginx (no audit)", "off": "off", "files": "embedded files", "jetstream": "JetStream",
         "normal": "files, bridge policy normal", "nice": "files, bridge nice 10", "own": "files, 1 shard + bridge own CPU",
         "base": "embedded files, BASELINE build", "tuned": "embedded files, tuned"}
rows = [(a[i], *map(float, a[i + 1:i + 11])) for i in range(0, len(a), 11)]
# Ratios are against `off` when it runs (the audit's cost), else the first mode.
ref = next((r for r in rows if r[0] == "off"), rows[0])
ref_rate, ref_machine, ref_p99 = ref[1], ref[5], ref[10]
lat = not math.isnan(ref_p99)
head = ("| audit | req/s | vs " + ref[0] + " | server CPU µs/req | nats-server CPU µs/req | all processes CPU µs/req"
        + " | machine CPU µs/req | of it kernel | " + ref[0] + " ÷ this, machine CPU | server page faults/req | server disk bytes/req |")
print(head + (" p50 ms | p99 ms | p99 vs " + ref[0] + " |" if lat else ""))
print("|---" * (11 + (3 if lat else 0)) + "|")
for m, rate, gw, nats, total, machine, kernel, faults, disk, p50, p99 in rows:
    line = (f"| {names[m]} | {rate:,.0f} | {rate / ref_rate:.3f} | {gw:.1f} | {nats:.1f} | {total:.1f}"
            f" | {machine:.1f} | {kernel:.1f} | {ref_machine / machine:.3f} | {faults:.3f} | {disk:.0f} |")
    if lat:
        line += f" {p50:.3f} | {p99:.3f} | {p99 / ref_p99:.2f} |"
    print(line)
PY
echo "raw results in $OUT" >&2
