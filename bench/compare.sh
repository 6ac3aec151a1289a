#!/usr/bin/env bash
# Side-by-side proxy benchmark on one machine, in one run:
#   direct  — the load tool straight to `gk-load mock` (zero delay)
#   nginx   — nginx proxy_pass to the same mock (2 workers, upstream keepalive)
#   gatekeeper — `gatekeeper serve` (2 shards, --no-auth) to the same mock
#
# Phase 1: max throughput, closed loop, 64 connections (oha -c 64), targets
#          alternated A/B/C/A/B/C so machine drift hits all alike.
# Phase 2: latency at a fixed open-loop rate of half nginx's max
#          (oha -q RATE --latency-correction), alternated the same way.
#
# usage: bench/compare.sh [SECONDS_PER_RUN] [ROUNDS]     (defaults 10 and 2)
# env:   OHA=path/to/oha (default: oha on PATH, else /tmp/oha-root/bin/oha)
#        OUT=dir for raw results (default bench/out/<timestamp>)
#        BASELINE=path/to/another/gatekeeper binary: also run it (target `baseline`,
#        same config and flags), alternated with the others, to compare two builds
#        side by side (e.g. before and after a change: build the old commit in a
#        `git worktree` with `cargo build --release -p gatekeeper`).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
rounds=${2:-2}
OHA=${OHA:-$(command -v oha || echo /tmp/oha-root/bin/oha)}
OUT=${OUT:-bench/out/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
[ -x "$OHA" ] || { echo "oha not found: cargo install oha --locked" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx not found: apt-get install nginx" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq not found: apt-get install jq" >&2; exit 1; }

cargo build --release -q -p gatekeeper -p gatekeeper-loadtest
bin=target/release

# shellcheck source=bench/lib.sh
. bench/lib.sh
trap cleanup EXIT

# Starts a command that prints "listening on ADDR"; echoes ADDR.

mock=$(start_listening "$OUT/mock" "$bin/gk-load" mock --listen 127.0.0.1:0 --threads 1)

ngport=$(start_nginx "$OUT/nginx" "$mock")

cat >"$OUT/gatekeeper.yaml" <<YAML
providers:
  - { name: mock, kind: openai_compatible, base_url: "http://$mock/v1", connections_max: 256 }
models:
  - { name: m, provider: mock, upstream_model: m }
YAML
gk=$(GATEKEEPER_LOG=warn start_listening "$OUT/gatekeeper" "$bin/gatekeeper" serve --config "$OUT/gatekeeper.yaml" \
    --listen 127.0.0.1:0 --shards 2 --no-auth)

body='{"model":"m","messages":[{"role":"user","content":"Say hello to the gateway"}],"max_tokens":16}'
declare -A url=(
    [direct]="http://$mock/v1/chat/completions"
    [nginx]="http://127.0.0.1:$ngport/v1/chat/completions"
    [gatekeeper]="http://$gk/v1/chat/completions"
)
targets=(direct nginx gatekeeper)
if [ -n "${BASELINE:-}" ]; then
    # Same settings; its own data dir (a data dir is locked by one gateway).
    mkdir -p "$OUT/baseline-cfg"
    cp "$OUT/gatekeeper.yaml" "$OUT/baseline-cfg/gatekeeper.yaml"
    base=$(GATEKEEPER_LOG=warn start_listening "$OUT/baseline" "$BASELINE" serve --config "$OUT/baseline-cfg/gatekeeper.yaml" \
        --listen 127.0.0.1:0 --shards 2 --no-auth)
    url[baseline]="http://$base/v1/chat/completions"
    targets+=(baseline)
fi

# Sanity: every target answers 200 with a completion.
for t in "${targets[@]}"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d "$body" "${url[$t]}")
    [ "$code" = 200 ] || { echo "$t answered $code" >&2; exit 1; }
done

run_oha() { # name file extra-args...
    local t=$1 file=$2; shift 2
    "$OHA" --no-tui --output-format json -z "${secs}s" -m POST -H 'content-type: application/json' -d "$body" \
        "$@" "${url[$t]}" >"$file"
}

echo "phase 1: closed loop, 64 connections, ${secs}s per run, $rounds rounds" >&2
for r in $(seq 1 "$rounds"); do
    for t in "${targets[@]}"; do
        run_oha "$t" "$OUT/max-$t-$r.json" -c 64
        printf '  %-11s round %s: %8.0f req/s\n' "$t" "$r" "$(jq '.summary.requestsPerSec' "$OUT/max-$t-$r.json")" >&2
        # Every answer must have been a 200, or the throughput means nothing.
        ok=$(jq '.summary.successRate' "$OUT/max-$t-$r.json")
        [ "$ok" = 1 ] || echo "  warning: $t success rate $ok" >&2
    done
done
mean_rps() { jq -s 'map(.summary.requestsPerSec) | add / length' "$OUT"/max-"$1"-*.json; }
nginx_max=$(mean_rps nginx)
rate=$(python3 -c "print(int($nginx_max / 2))")

echo "phase 2: open loop at $rate req/s (half nginx's max), ${secs}s per run" >&2
for r in $(seq 1 "$rounds"); do
    for t in "${targets[@]}"; do
        run_oha "$t" "$OUT/lat-$t-$r.json" -c 64 -q "$rate" --latency-correction
    done
done

# Percentiles (ms) averaged over rounds.
pct() { jq -s "map(.latencyPercentiles[\"$2\"]) | add / length * 1000" "$OUT"/lat-"$1"-*.json; }
{
    echo "| target | max req/s (c=64) | vs nginx | p50 ms @ $rate/s | p99 ms | p99.9 ms | added p50 ms | added p99 ms |"
    echo "|---|---|---|---|---|---|---|---|"
    d50=$(pct direct p50); d99=$(pct direct p99)
    for t in "${targets[@]}"; do
        m=$(mean_rps "$t"); p50=$(pct "$t" p50); p99=$(pct "$t" p99); p999=$(pct "$t" p99.9)
        python3 - "$t" "$m" "$nginx_max" "$p50" "$p99" "$p999" "$d50" "$d99" <<'PY'
import sys
t, m, n, p50, p99, p999, d50, d99 = sys.argv[1], *map(float, sys.argv[2:])
print(f"| {t} | {m:,.0f} | {m/n:.2f} | {p50:.3f} | {p99:.3f} | {p999:.3f} | {p50-d50:+.3f} | {p99-d99:+.3f} |")
PY
    done
} | tee "$OUT/summary.md"
echo "raw results in $OUT" >&2
