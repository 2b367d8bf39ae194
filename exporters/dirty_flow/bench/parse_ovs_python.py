#!/usr/bin/python3
"""Parser throughput of Open vSwitch's own Python flow parser (ovs.flow.ofp), for bench.sh.

Usage: parse_ovs_python.py FILE MAX_LINES. Parses a uniform sample of MAX_LINES lines of a
`--no-stats` dump (OVS 3.1's parser fails on the default output) and prints
`lines wall_seconds cpu_seconds`, CPU being the process's user + system time over the parse
loop only (not the import or the file read).
"""
import sys
import time

from ovs.flow.ofp import OFPFlow

path, limit = sys.argv[1], int(sys.argv[2])
with open(path) as f:
    lines = [l.rstrip("\n") for l in f if l.strip()]
# A uniform sample of the whole dump (it is sorted by table, and tables hold different kinds).
lines = lines[:: max(1, len(lines) // limit)][:limit]
errors = 0
cpu_start = time.process_time()
start = time.monotonic()
for l in lines:
    try:
        OFPFlow(l)
    except Exception:
        errors += 1
secs = time.monotonic() - start
cpu = time.process_time() - cpu_start
print(f"parsed {len(lines)} lines, {errors} errors", file=sys.stderr)
print(f"{len(lines)} {secs:.4f} {cpu:.4f}")
