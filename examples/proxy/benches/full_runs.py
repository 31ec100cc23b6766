#!/usr/bin/env python3
"""The proxy's figures for docs/performance.md in one command: N full runs of the proxy bench
(every route, 1 and 64 connections, (b) and (c) in alternating slices and then one after the
other), then instructions per request under callgrind, summed up in one table.

    python3 examples/proxy/benches/full_runs.py            # 3 runs
    GB_FULL_RUNS=1 GB_PROXY_BENCH_SECS=2 python3 examples/proxy/benches/full_runs.py  # quick

Run it on a quiet machine (nothing else building); the table says the load average seen. The
raw output of every run is kept in `GB_FULL_RUNS_DIR` (default: a temporary directory).
"""

import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))

ROUTES = [
    ("generateContent", "native"),
    ("streamGenerateContent", "stream"),
    ("OpenAI chat", "chat"),
]


def run(cmd, env, log):
    print("$", " ".join(cmd), flush=True)
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        out.write(proc.stdout)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-3000:])
        raise SystemExit(f"failed: {' '.join(cmd)} (log: {log})")
    return proc.stdout


def parse(text):
    """(route, connections, target) -> (req/s, p50, p90, p99, p99.9, cpu, ratio%)."""
    rows = {}
    route = None
    for line in text.splitlines():
        for title, name in ROUTES:
            if line.startswith(title):
                route = name
        if not line.startswith("| (") or route is None:
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 9:
            continue
        name, conns = cells[0], cells[1]
        target = name.split(")")[0] + ")" + (", sequential" if "sequential" in name else "")
        rps = re.match(r"(\d+)", cells[2])
        ratio = re.search(r"\((\d+)% of \(b\)", cells[2])
        nums = [float(re.match(r"([\d.]+|NaN)", c).group(1)) if re.match(r"[\d.]+", c) else None
                for c in cells[3:8]]
        rows[(route, int(conns), target)] = (
            int(rps.group(1)) if rps else None, *nums, int(ratio.group(1)) if ratio else None)
    return rows


def span(values, fmt="{:.0f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"


def main():
    runs = int(os.environ.get("GB_FULL_RUNS", "3"))
    out_dir = os.environ.get("GB_FULL_RUNS_DIR") or tempfile.mkdtemp(prefix="gb-full-runs-")
    os.makedirs(out_dir, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("GB_PROXY_BENCH_SEQUENTIAL", "1")
    run(["cargo", "build", "--release", "-p", "gemini-balance-proxy"], env,
        os.path.join(out_dir, "build.log"))
    run(["cargo", "bench", "-p", "gemini-balance-proxy", "--bench", "proxy", "--no-run"], env,
        os.path.join(out_dir, "build-bench.log"))
    all_rows = defaultdict(list)
    loads = []
    for i in range(1, runs + 1):
        text = run(["cargo", "bench", "-p", "gemini-balance-proxy", "--bench", "proxy"], env,
                   os.path.join(out_dir, f"run{i}.log"))
        loads += re.findall(r"load average ([\d.]+ [\d.]+ [\d.]+)", text)
        for key, value in parse(text).items():
            all_rows[key].append(value)
    cg = run([sys.executable, os.path.join(HERE, "callgrind.py"), "native", "stream", "openai"],
             env, os.path.join(out_dir, "callgrind.log"))

    print(f"\n{runs} run(s); load averages seen: {', '.join(loads)}; logs in {out_dir}\n")
    print("| route | connections | (b) req/s | (c) req/s | (c)/(b) alternating | (c)/(b) sequential "
          "| (b) p50 / p90 / p99 / p99.9 µs | (c) p50 / p90 / p99 / p99.9 µs | (c) CPU per request |")
    print("|---|---|---|---|---|---|---|---|---|")
    for _, route in ROUTES:
        for conns in (1, 64):
            b = all_rows.get((route, conns, "(b)"), [])
            c = all_rows.get((route, conns, "(c)"), [])
            cs = all_rows.get((route, conns, "(c), sequential"), [])
            if not b or not c:
                continue
            pct = lambda rows: " / ".join(span([r[i] for r in rows]) for i in range(1, 5))
            print(f"| {route} | {conns} | {span([r[0] for r in b])} | {span([r[0] for r in c])} "
                  f"| {span([r[6] for r in c], '{:.0f}%')} | {span([r[6] for r in cs], '{:.0f}%')} "
                  f"| {pct(b)} | {pct(c)} | {span([r[5] for r in c], '{:.0f} µs')} |")
    print()
    for line in cg.splitlines():
        if "instructions per request" in line:
            print("-", line)
    streams = [l for l in open(os.path.join(out_dir, "run1.log")) if l.startswith("| (c)") and "MiB" in l]
    for line in streams:
        print("streams (run 1):", line.strip())


if __name__ == "__main__":
    main()
