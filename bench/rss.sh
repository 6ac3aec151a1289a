#!/usr/bin/env bash
# Gateway memory (release build, `--shards 2`, default limits), each phase on a fresh
# gateway so one phase's freed-but-kept pages do not blur the next:
#   1. RSS idle, with N idle keep-alive connections (one request each, opened one at a
#      time, then left open), and after they close;
#   2. RSS idle and its peak under load (`gk-load run`, closed loop, 64 connections, chat
#      requests through the gateway to the mock), audit log on (the default: file log);
#   3. the same with the audit log off, whose buffers dominate 2.
#
# usage: bench/rss.sh [CONNECTIONS] [LOAD_SECONDS]     (defaults 10000 and 10)
# env:   OUT=dir for logs (default bench/out/rss-<timestamp>)
#        BIN_DIR=dir holding `gatekeeper` and `gk-load` to measure (default: build the
#        release binaries of this checkout), e.g. a build of an older commit, for before/after
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-10000}
secs=${2:-10}
OUT=${OUT:-bench/out/rss-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if [ -n "${BIN_DIR:-}" ]; then
    bin=$(cd "$BIN_DIR" && pwd)
else
    cargo build --release -q -p gatekeeper -p gatekeeper-loadtest
    bin=$PWD/target/release
fi

# shellcheck source=bench/lib.sh
. bench/lib.sh
trap cleanup EXIT

# The client side holds N sockets too.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((n + 64)) ] || { echo "open-file limit $(ulimit -n) is below $n connections" >&2; exit 1; }

mock=$(start_listening "$OUT/mock" "$bin/gk-load" mock --listen 127.0.0.1:0 --threads 1)

# gateway NAME AUDIT: starts a fresh gateway; echoes its address, its pid in OUT/NAME.pid.
gateway() {
    cat >"$OUT/$1.yaml" <<YAML
providers:
  - { name: mock, kind: openai_compatible, base_url: "http://$mock/v1", connections_max: 256 }
models:
  - { name: m, provider: mock, upstream_model: m }
audit: { data_dir: "$OUT/$1-data", enabled: $2 }
YAML
    GATEKEEPER_LOG=warn start_listening "$OUT/$1" "$bin/gatekeeper" serve --config "$OUT/$1.yaml" \
        --listen 127.0.0.1:0 --shards 2 --no-auth
}

stop() { kill "$(cat "$OUT/$1.pid")" && rm "$OUT/$1.pid"; }

load() { echo "$bin/gk-load" run --url "http://$1/v1/chat/completions" --model m --connections 64 --duration "${secs}s"; }

{
    echo "| phase | gateway RSS |"
    echo "|---|--:|"
    gk=$(gateway idle true)
    python3 bench/rss.py --addr "$gk" --pid "$(cat "$OUT/idle.pid")" --label "idle connections" --connections "$n"
    stop idle
    gk=$(gateway load true)
    # shellcheck disable=SC2046 # the load command is split on purpose
    python3 bench/rss.py --addr "$gk" --pid "$(cat "$OUT/load.pid")" --label "audit on" --load $(load "$gk")
    stop load
    gk=$(gateway load-noaudit false)
    # shellcheck disable=SC2046
    python3 bench/rss.py --addr "$gk" --pid "$(cat "$OUT/load-noaudit.pid")" --label "audit off" --load $(load "$gk")
    stop load-noaudit
} | tee "$OUT/rss.md"
