# Shared by the bench/*.sh scripts (sourced, not run). Expects $OUT to be set.

# Kills everything the script started (each start writes OUT/NAME.pid).
cleanup() {
    for f in "$OUT"/*.pid "$OUT"/nginx/nginx.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
    wait 2>/dev/null || true
}

# start_listening LOG CMD...: starts CMD, waits (10 s at most) for its "listening on ADDR"
# line, echoes ADDR; the pid goes to LOG.pid.
start_listening() {
    local log=$1; shift
    "$@" >"$log.out" 2>"$log.err" &
    echo $! >"$log.pid"
    for _ in $(seq 1 200); do
        if grep -q "listening on " "$log.out" 2>/dev/null; then
            grep -o "listening on [0-9.:]*" "$log.out" | head -1 | awk '{print $3}'
            return
        fi
        sleep 0.05
    done
    echo "no address from $*" >&2; cat "$log.err" >&2; exit 1
}

# A free loopback TCP port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts nginx (2 workers, keep-alive to the upstream) proxying to MOCK (host:port), its
# files under DIR; echoes its port once it answers. Its master writes (and on exit
# removes) DIR/nginx.pid, which cleanup kills.
start_nginx() {
    local dir=$1 mock=$2 port
    port=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<NGINX
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    upstream mock { server $mock; keepalive 128; }
    server {
        listen 127.0.0.1:$port reuseport backlog=4096;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
NGINX
    nginx -c "$dir/nginx.conf" >"$dir/stdout" 2>&1 &
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/v1/models" && break; sleep 0.05; done
    echo "$port"
}

# mean NAME JQ: the mean of JQ over the rounds' results, OUT/NAME-*.json.
mean() { jq -s "map($2) | add / length" "$OUT"/"$1"-*.json; }

# new_issuer: a fresh key issuer in OUT/issuer.key (with $bin/gatekeeper); sets $public
# to its public key, for the config's keys.issuers.
new_issuer() {
    "$bin/gatekeeper" keys gen-issuer --out "$OUT/issuer.key" >"$OUT/issuer.txt"
    public=$(grep -o 'k4\.public\.[A-Za-z0-9_-]*' "$OUT/issuer.txt" | head -1)
}
