#!/usr/bin/env python3
"""Instructions per request of the proxy (callgrind), for the native and the OpenAI route.

    python3 examples/proxy/benches/callgrind.py [ROUTE ...]   # routes: native, openai, stream

Needs valgrind, and release builds of the proxy and of the proxy bench (its upstream stand-in):

    cargo build --release -p gemini-balance-proxy
    cargo bench -p gemini-balance-proxy --bench proxy --no-run

The proxy runs under `valgrind --tool=callgrind` in front of the bench's upstream stand-in
(`GB_PROXY_BENCH_ROLE=upstream`), with 3 keys, one client token and `LOG_LEVEL=warn` (usage
recording to SQLite on). Per route: 200 requests of warm-up, counters zeroed
(`callgrind_control -z`), N requests (default 2,000, `GB_CALLGRIND_REQUESTS`) over 4 keep-alive
connections, a dump (`callgrind_control -d`), total `Ir` / N. All the proxy's threads count (the
SQLite writer's too); the kernel does not; the client does not (it is this script).
`GB_CALLGRIND_PROXY` runs another proxy binary (a copy of an earlier build, to compare).
`GB_CALLGRIND_KEEP=1` keeps the dumps (for `callgrind_annotate`) in `GB_CALLGRIND_DIR`.
"""

import glob
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
TOKEN = "sk-bench-client-token"
MODEL = "gemini-2.0-flash"
PROMPT = ("Write one sentence about the sea, in the voice of a lighthouse keeper who has not seen a "
          "ship in a year.")

ROUTES = {
    # (path, body, headers, check)
    "native": (
        f"/v1beta/models/{MODEL}:generateContent",
        json.dumps({
            "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
            "generationConfig": {"temperature": 0.7, "maxOutputTokens": 256, "topP": 0.95},
        }),
        {"x-goog-api-key": TOKEN},
        b'"usageMetadata"',
    ),
    "openai": (
        "/v1/chat/completions",
        json.dumps({
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "temperature": 0.7, "max_tokens": 256, "top_p": 0.95,
        }),
        {"authorization": f"Bearer {TOKEN}"},
        b'"chat.completion"',
    ),
    "stream": (
        f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
        json.dumps({
            "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
            "generationConfig": {"temperature": 0.7, "maxOutputTokens": 256, "topP": 0.95},
        }),
        {"x-goog-api-key": TOKEN},
        b'"STOP"',
    ),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drive(port, route, total, connections=4):
    path, body, headers, check = ROUTES[route]
    headers = dict(headers, **{"content-type": "application/json"})
    errors = []

    def worker(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(n):
            conn.request("POST", path, body=body, headers=headers)
            res = conn.getresponse()
            data = res.read()
            if res.status != 200 or check not in data:
                errors.append((res.status, data[:300]))
        conn.close()

    threads = [threading.Thread(target=worker, args=(total // connections,)) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{route}: {len(errors)} bad answers, first: {errors[0]}")
    return total // connections * connections


def total_ir(dump):
    with open(dump) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise SystemExit(f"no totals in {dump}")


def main():
    # vgdb (behind callgrind_control) names its files after the user and `HOST`, which is
    # also the proxy's listening address: both sides get the same.
    os.environ.setdefault("USER", "user")
    os.environ.setdefault("LOGNAME", os.environ["USER"])
    os.environ["HOST"] = "127.0.0.1"
    routes = sys.argv[1:] or ["native", "openai"]
    requests = int(os.environ.get("GB_CALLGRIND_REQUESTS", "2000"))
    proxy = os.environ.get("GB_CALLGRIND_PROXY") or os.path.join(TARGET, "release", "gemini-balance-proxy")
    benches = [p for p in glob.glob(os.path.join(TARGET, "release", "deps", "proxy-*"))
               if os.access(p, os.X_OK) and not p.endswith(".d")]
    if not os.path.exists(proxy) or not benches:
        raise SystemExit("build first: cargo build --release -p gemini-balance-proxy && "
                         "cargo bench -p gemini-balance-proxy --bench proxy --no-run")
    bench = max(benches, key=os.path.getmtime)
    upstream = subprocess.Popen([bench], env=dict(os.environ, GB_PROXY_BENCH_ROLE="upstream"),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    line = upstream.stdout.readline().decode()
    upstream_addr = line.strip().removeprefix("LISTENING ")
    work = os.environ.get("GB_CALLGRIND_DIR") or tempfile.mkdtemp(prefix="gb-callgrind-")
    os.makedirs(work, exist_ok=True)
    keys = [f"AIzaSyBench_abcdefghijklmnopqrstuvw{n:04}" for n in range(1, 4)]
    with open(os.path.join(work, ".env"), "w") as f:
        f.write(f"API_KEYS={json.dumps(keys)}\nALLOWED_TOKENS={json.dumps([TOKEN])}\n"
                f"BASE_URL=http://{upstream_addr}/v1beta\nCHECK_INTERVAL_HOURS=0\nLOG_LEVEL=warn\n")
    port = free_port()
    out = os.path.join(work, "callgrind.out")
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", proxy],
        cwd=work, env=dict(os.environ, PORT=str(port)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("the proxy did not start under valgrind")
        results = {}
        for route in routes:
            drive(port, route, 200)
            time.sleep(0.5)
            subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True,
                           stdout=subprocess.DEVNULL)
            n = drive(port, route, requests)
            time.sleep(0.5)  # the SQLite writer's batch of the last requests
            before = set(glob.glob(f"{out}.{server.pid}*"))
            subprocess.run(["callgrind_control", "-d", route, str(server.pid)], check=True,
                           stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            dumps = sorted(set(glob.glob(f"{out}.{server.pid}*")) - before, key=os.path.getmtime)
            ir = sum(total_ir(d) for d in dumps)
            results[route] = ir / n
            print(f"{route}: {ir / n:,.0f} instructions per request ({n} requests)", flush=True)
    finally:
        server.terminate()
        server.wait()
        upstream.stdin.close()
        upstream.wait()
    if os.environ.get("GB_CALLGRIND_KEEP"):
        print(f"dumps in {work}")
    return results


if __name__ == "__main__":
    main()
