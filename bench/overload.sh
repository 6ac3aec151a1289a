#!/usr/bin/env bash
# Overload: does shedding keep the latency of the requests the gateway admits flat?
#
# One `gatekeeper serve --shards 1` in front of `gk-load mock --latency-ms L` (a provider
# that takes L ms per answer), its pool to the mock capped at CONNS connections — so the
# gateway's max rate is about CONNS / L — and two settings of the shard's admission bound:
#   bounded   — limits.inflight_per_shard_max: INFLIGHT (CONNS + 2: every admitted request
#               finds a connection; the 2 spare cover a closed-loop client whose next request
#               arrives before its previous one has left the shard's count)
#   unbounded — the default 4096, so excess requests queue for a pooled connection
#               (waiting up to connect_timeout_ms) instead of being shed at once
#
# Phase 1: max rate, closed loop of CONNS connections against `bounded` (2xx per second).
# Phase 2: open loop (gk-load, latency from each request's intended send time) at 0.5× and
#          1.5× that max against `bounded`, and at 1.5× against `unbounded`, alternated
#          round by round. Prints, per point: the admitted (2xx) p50/p99, the 2xx rate and
#          the shed fraction (503 `overloaded` / sent).
#
# usage: bench/overload.sh [SECONDS_PER_RUN] [ROUNDS]          (defaults 10 and 2)
# env:   LATENCY_MS (20), CONNS (64), INFLIGHT (CONNS + 2), OUT (bench/out/<timestamp>-overload)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
rounds=${2:-2}
LATENCY_MS=${LATENCY_MS:-20}
CONNS=${CONNS:-64}
INFLIGHT=${INFLIGHT:-$((CONNS + 2))}
OUT=${OUT:-bench/out/$(date -u +%Y%m%dT%H%M%SZ)-overload}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

cargo build --release -q -p gatekeeper -p gatekeeper-loadtest
bin=target/release

# shellcheck source=bench/lib.sh
. bench/lib.sh
trap cleanup EXIT

mock=$(start_listening "$OUT/mock" "$bin/gk-load" mock --listen 127.0.0.1:0 --threads 1 --latency-ms "$LATENCY_MS")

# start_gateway NAME INFLIGHT_MAX: a one-shard gateway in its own dir (a data dir is
# locked by one gateway); echoes its address.
start_gateway() {
    mkdir -p "$OUT/$1"
    cat >"$OUT/$1/gatekeeper.yaml" <<YAML
limits: { inflight_per_shard_max: $2 }
providers:
  - { name: mock, kind: openai_compatible, base_url: "http://$mock/v1", connections_max: $CONNS }
models:
  - { name: m, provider: mock, upstream_model: m }
YAML
    GATEKEEPER_LOG=warn start_listening "$OUT/$1/gatekeeper" "$bin/gatekeeper" serve \
        --config "$OUT/$1/gatekeeper.yaml" --listen 127.0.0.1:0 --shards 1 --no-auth
}
declare -A url=(
    [bounded]="http://$(start_gateway bounded "$INFLIGHT")/v1/chat/completions"
    [unbounded]="http://$(start_gateway unbounded 4096)/v1/chat/completions"
)
for t in bounded unbounded; do
    "$bin/gk-load" run --url "${url[$t]}" --model m --connections 1 --requests 10 --json "$OUT/sanity-$t.json" >/dev/null
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); sys.exit(r['requests']['ok'] != 10)" \
        "$OUT/sanity-$t.json" || { echo "$t does not answer 200" >&2; exit 1; }
done

ok_rate() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['requests']['ok'] / r['elapsed_s'])" "$1"; }

echo "phase 1: closed loop, $CONNS connections, ${secs}s per run, $rounds rounds (mock ${LATENCY_MS} ms)" >&2
maxes=()
for r in $(seq 1 "$rounds"); do
    "$bin/gk-load" run --url "${url[bounded]}" --model m --connections "$CONNS" --duration "${secs}s" \
        --json "$OUT/max-$r.json" >/dev/null
    maxes+=("$(ok_rate "$OUT/max-$r.json")")
    printf '  round %s: %8.0f 2xx/s\n' "$r" "${maxes[-1]}" >&2
done
max=$(python3 -c "import sys; v=[float(x) for x in sys.argv[1:]]; print(sum(v) / len(v))" "${maxes[@]}")
low=$(python3 -c "print(round($max * 0.5))")
high=$(python3 -c "print(round($max * 1.5))")

points=("bounded:$low:0.5x" "bounded:$high:1.5x" "unbounded:$high:1.5x")
echo "phase 2: open loop at $low and $high req/s (0.5x and 1.5x of $(printf '%.0f' "$max")), ${secs}s per run" >&2
for r in $(seq 1 "$rounds"); do
    for p in "${points[@]}"; do
        IFS=: read -r t rate tag <<<"$p"
        "$bin/gk-load" run --url "${url[$t]}" --model m --rate "$rate" --duration "${secs}s" --timeout 10s \
            --json "$OUT/open-$t-$tag-$r.json" >/dev/null
        echo "  round $r: $t at $tag done" >&2
    done
done

python3 - "$OUT" "$max" "$rounds" "${points[@]}" <<'PY'
import json, sys
out, mx, rounds, points = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]

def at(dist, p):
    return next((q["us"] for q in dist["percentiles"] if abs(q["p"] - p) < 1e-9), 0) / 1000

print(f"max (closed loop, 2xx/s): {mx:.0f}")
print()
print("| gateway | load | round | rate sent/s | 2xx/s | admitted p50 ms | admitted p99 ms | shed (503) | other errors |")
print("|---|---|---|---|---|---|---|---|---|")
p99 = {}
for p in points:
    t, rate, tag = p.split(":")
    for r in range(1, rounds + 1):
        rep = json.load(open(f"{out}/open-{t}-{tag}-{r}.json"))
        sent = rep["requests"]["sent"]
        ok = rep["requests"]["ok"]
        shed = rep["statuses"].get("503", 0)
        other = sent - ok - shed
        d = rep["latency_ok_us"]
        p99.setdefault((t, tag), []).append(at(d, 99.0))
        print(f"| {t} | {tag} ({rate}/s) | {r} | {sent / rep['elapsed_s']:.0f} | {ok / rep['elapsed_s']:.0f} "
              f"| {at(d, 50.0):.2f} | {at(d, 99.0):.2f} | {shed / max(sent, 1):.1%} | {other} |")
print()
base = sum(p99[("bounded", "0.5x")]) / rounds
for key in [("bounded", "1.5x"), ("unbounded", "1.5x")]:
    v = sum(p99[key]) / rounds
    print(f"admitted p99 at 1.5x / at 0.5x, {key[0]}: {v / base:.2f} ({v:.2f} ms vs {base:.2f} ms)")
PY
