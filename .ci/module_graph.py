#!/usr/bin/env python3
"""Fails when the library's top-level modules depend on each other in a circle.

A module depends on another when its code (not its doc comments) names `crate::<other>`.
Shared types live in leaf modules (`fingerprint`, `ext`, `sse`, ...), so every edge points
down; this check keeps it that way. Prints the cycle and the lines that make it.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_files(name):
    path = os.path.join(ROOT, name)
    files = []
    if os.path.isdir(path):
        for d, _, fs in os.walk(path):
            files += [os.path.join(d, f) for f in fs if f.endswith(".rs")]
    if os.path.exists(path + ".rs"):
        files.append(path + ".rs")
    return files


def main():
    mods = sorted({m[:-3] if m.endswith(".rs") else m for m in os.listdir(ROOT)} - {"lib"})
    edges = {m: {} for m in mods}
    for m in mods:
        for f in module_files(m):
            with open(f, encoding="utf-8") as fh:
                for i, line in enumerate(fh, 1):
                    code = line.strip()
                    if code.startswith("//"):
                        continue
                    for target in re.findall(r"crate::([a-z_]+)", code):
                        if target != m and target in edges:
                            edges[m].setdefault(target, []).append(f"{os.path.relpath(f, os.path.dirname(ROOT))}:{i}")
    # the prelude re-exports everything on purpose
    edges.pop("prelude", None)
    for m in edges:
        edges[m].pop("prelude", None)
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    for v in edges:
        if v not in index:
            visit(v)
    cycles = [c for c in sccs if len(c) > 1]
    for comp in cycles:
        print("module cycle:", " ".join(sorted(comp)), file=sys.stderr)
        for a in comp:
            for b in comp:
                if b in edges[a]:
                    print(f"  {a} -> {b}: {', '.join(edges[a][b][:3])}", file=sys.stderr)
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
