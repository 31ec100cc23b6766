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


def strip_comments(text):
    """The code without comments (line, doc and block), line numbers kept."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return "\n".join(re.sub(r"//.*", "", line) for line in text.split("\n"))


def references(text, top_level):
    """(module, line) for each top-level module the code names: `crate::m`, the names in
    `crate::{a, b::c}` (over several lines too), and `super::m` in a file at the top of src/,
    where `super` is the crate."""
    code = strip_comments(text)
    line_of = lambda pos: code.count("\n", 0, pos) + 1
    prefixes = r"crate" if not top_level else r"(?:crate|super)"
    for m in re.finditer(prefixes + r"::([a-z_][a-z0-9_]*)", code):
        yield m.group(1), line_of(m.start())
    for m in re.finditer(prefixes + r"::\{", code):
        depth, i = 1, m.end()
        start = i
        while i < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        inner = code[start : i - 1]
        # only the names at the group's top level: `a`, `b` of `{a, b::{c, d}}`
        level, token = 0, ""
        for ch in inner + ",":
            if ch == "{":
                level += 1
            elif ch == "}":
                level -= 1
            elif ch == "," and level == 0:
                name = re.match(r"\s*([a-z_][a-z0-9_]*)", token)
                if name and name.group(1) != "self":
                    yield name.group(1), line_of(m.start())
                token = ""
                continue
            if level == 0:
                token += ch


def main():
    mods = sorted({m[:-3] if m.endswith(".rs") else m for m in os.listdir(ROOT)} - {"lib"})
    edges = {m: {} for m in mods}
    for m in mods:
        for f in module_files(m):
            with open(f, encoding="utf-8") as fh:
                text = fh.read()
            top_level = os.path.dirname(f) == ROOT
            for target, line in references(text, top_level):
                if target != m and target in edges:
                    where = f"{os.path.relpath(f, os.path.dirname(ROOT))}:{line}"
                    edges[m].setdefault(target, []).append(where)
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
