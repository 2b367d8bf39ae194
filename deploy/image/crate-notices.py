#!/usr/bin/env python3
"""Prints the licence notices of the Rust crates compiled into the image's three exporters.

    deploy/image/crate-notices.py > crate-licenses.txt     (run from the repository)

The crates are those `cargo metadata` (offline, from Cargo.lock) resolves as normal
dependencies of log_pattern_exporter, libvirt_exporter and dirty_flow_exporter for the build
host's target: build scripts and test-only crates are not in the binaries. Per crate: name,
version, the licence its manifest declares, where it comes from, and the licence, copyright and
notice files it ships (LICENSE*, LICENCE*, COPYING*, NOTICE*, at its top and one directory
below, as tikv-jemalloc-sys ships jemalloc's COPYING), each distinct text printed once at the
end and referred to by number. The output depends only on Cargo.lock and the crate sources:
the same inputs give the same bytes.
"""
import json
import os
import subprocess
import sys

ROOTS = ("log_pattern_exporter", "libvirt_exporter", "dirty_flow_exporter")
NAMES = ("license", "licence", "copying", "notice")
SKIP_DIRS = {"tests", "test", "benches", "examples", "target", ".git"}


def host_target():
    out = subprocess.run(["rustc", "-vV"], check=True, capture_output=True, text=True).stdout
    return next(l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("host: "))


def metadata(repo):
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--offline",
         "--filter-platform", host_target()],
        cwd=repo, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def shipped(meta):
    """The packages compiled into the exporters: the normal-dependency closure of ROOTS."""
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    todo = [i for i, p in packages.items() if p["name"] in ROOTS]
    if len(todo) != len(ROOTS):
        sys.exit(f"crate-notices: not all of {ROOTS} are workspace packages")
    seen = set()
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        for d in nodes[i]["deps"]:
            if any(k["kind"] is None for k in d["dep_kinds"]):
                todo.append(d["pkg"])
    return sorted((packages[i] for i in seen), key=lambda p: (p["name"], p["version"]))


def notice_files(package, repo):
    """Licence, copyright and notice files of a crate: at its top and one directory below (the
    repository's LICENSE for its own crates)."""
    if package["source"] is None:
        return [("LICENSE of this repository", os.path.join(repo, "LICENSE"))]
    top = os.path.dirname(package["manifest_path"])
    found = []
    for root, dirs, files in os.walk(top):
        depth = os.path.relpath(root, top).count(os.sep) + (root != top)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and depth < 1)
        for f in sorted(files):
            if f.lower().startswith(NAMES):
                found.append(os.path.join(root, f))
    if package.get("license_file"):
        declared = os.path.join(top, package["license_file"])
        if os.path.isfile(declared) and declared not in found:
            found.append(declared)
    return [(os.path.relpath(p, top), p) for p in found]


def main():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    texts, index, rows = [], {}, []
    for p in shipped(metadata(repo)):
        origin = "this repository" if p["source"] is None else (p.get("repository") or p["source"])
        refs = []
        for rel, path in notice_files(p, repo):
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read().strip()
            if text not in index:
                texts.append(text)
                index[text] = len(texts)
            refs.append(f"{rel} (text {index[text]})")
        rows.append((p, origin, refs))
    out = sys.stdout
    out.write("Rust crates compiled into log_pattern_exporter, libvirt_exporter and "
              "dirty_flow_exporter\n")
    out.write(f"({len(rows)} crates; the texts they ship follow the list)\n\n")
    for p, origin, refs in rows:
        out.write(f"{p['name']} {p['version']}\n")
        out.write(f"  licence: {p.get('license') or 'not declared (see its files)'}\n")
        out.write(f"  from: {origin}\n")
        out.write(f"  files: {', '.join(refs) if refs else 'none shipped in the crate'}\n")
    for n, text in enumerate(texts, start=1):
        out.write(f"\n===== text {n} =====\n{text}\n")


if __name__ == "__main__":
    main()
