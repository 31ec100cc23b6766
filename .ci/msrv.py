"""Fails when a locked dependency declares a rust-version newer than gemini-balance's.

Reads `cargo metadata` on stdin (all features, this platform). The other half of the MSRV
check is clippy's `incompatible_msrv` lint (std APIs newer than rust-version), denied in the
workspace lints; neither compiles with an actual toolchain of that version.
"""
import json
import sys


def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.load(sys.stdin)
msrv = next(p["rust_version"] for p in meta["packages"] if p["name"] == "gemini-balance")
used = {node["id"] for node in meta["resolve"]["nodes"]}
newer = sorted(
    "{} {} needs Rust {}".format(p["name"], p["version"], p["rust_version"])
    for p in meta["packages"]
    if p["id"] in used and p.get("rust_version") and version(p["rust_version"]) > version(msrv)
)
if newer:
    sys.exit("dependencies newer than rust-version {}:\n  {}".format(msrv, "\n  ".join(newer)))
print("{} packages, none needs a Rust newer than {}".format(len(used), msrv))
