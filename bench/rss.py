#!/usr/bin/env python3
"""Gateway memory for bench/rss.sh: resident set size (VmRSS of --pid) at idle, then either
with N idle keep-alive connections (each after one request, opened one at a time) and
after they close, or while a load command runs. Prints markdown table rows labelled
--label, and one JSON line on stderr.

usage: bench/rss.py --addr HOST:PORT --pid PID --label TEXT (--connections N | --load CMD...)
"""
import argparse
import json
import socket
import subprocess
import sys
import time

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")


def one_request(sock):
    """Sends /healthz and reads its whole answer, leaving the connection open."""
    sock.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("gateway closed a connection mid-answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("gateway closed a connection mid-body")
        body += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"unexpected answer: {head[:80]!r}")


def settle(pid, seconds=2.0):
    """RSS once the gateway is quiet: the allocator hands freed pages back lazily."""
    time.sleep(seconds)
    return rss_kib(pid)


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--connections", type=int, default=0)
    ap.add_argument("--load", nargs=argparse.REMAINDER, help="command run while sampling RSS")
    args = ap.parse_args()
    host, port = args.addr.rsplit(":", 1)
    target = (host, int(port))
    result = {"label": args.label}

    warm = socket.create_connection(target)
    one_request(warm)
    warm.close()
    result["idle_kib"] = idle = settle(args.pid)
    print(f"| {args.label}: idle, after one request | {mib(idle)} |")

    if args.connections:
        conns = []
        for _ in range(args.connections):
            s = socket.create_connection(target)
            one_request(s)
            conns.append(s)
        result["held_kib"] = held = settle(args.pid)
        per_conn = (held - idle) * 1024 / args.connections
        result["per_connection_bytes"] = round(per_conn)
        print(f"| {args.label}: {args.connections:,} idle keep-alive connections "
              f"| {mib(held)} ({per_conn:,.0f} B per connection) |")
        # Every connection must still be open and usable after the measurement.
        for s in conns[:: max(1, len(conns) // 100)]:
            one_request(s)
        for s in conns:
            s.close()
        result["closed_kib"] = closed = settle(args.pid)
        print(f"| {args.label}: after they closed | {mib(closed)} |")

    if args.load:
        proc = subprocess.Popen(args.load, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, rss_kib(args.pid))
            time.sleep(0.1)
        if proc.returncode != 0:
            raise SystemExit(f"load command failed ({proc.returncode}): {args.load}")
        result["load_peak_kib"] = peak
        print(f"| {args.label}: under load, peak | {mib(peak)} |")

    sys.stdout.flush()
    print(json.dumps(result), file=sys.stderr)


if __name__ == "__main__":
    main()
