#!/usr/bin/env python3
"""Combines rule files of log_pattern_exporter into one rule file, on stdout.

Usage: combine-log-rules.py [--header FILE] RULE_FILE...

The output is FILE's text (top-level settings such as `sources:` or `start_at:`), then one
`rules:` list with the rules of every RULE_FILE in order, each introduced by a comment naming
its file. Only the `rules:` list of each input is taken (its own `sources:` are dropped: the
header says where the lines come from). Rule names must be unique across the inputs; the
exporter's `--config.check` verifies that on the result.
"""
import argparse
import os
import sys


def rules_of(path):
    """The lines of the top-level `rules:` list of a rule file, as written."""
    out, inside = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("rules:"):
                inside = True
                continue
            if inside and line and not line.startswith((" ", "#", "-")):
                inside = False
            if inside:
                out.append(line)
    if not any(l.lstrip().startswith("- ") for l in out):
        sys.exit(f"{path}: no `rules:` list found")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--header", help="file whose text goes first (sources, start_at...)")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    out = []
    if args.header:
        with open(args.header, encoding="utf-8") as f:
            out.append(f.read().rstrip("\n"))
    out.append("rules:")
    for path in args.files:
        out.append(f"  # --- from {os.path.basename(path)}")
        out.extend(rules_of(path))
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
