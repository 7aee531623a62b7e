#!/usr/bin/env python3
"""Instructions per request, counted by callgrind: a figure the shared machine's noise does not move.

    python3 loadtests/callgrind.py [--scenario hot|cold|reject] [--top N] [--keep DIR] BIN [BIN ...]

For each keygate binary, in turn, on one set of processes (Redis, the upstream, keys): start the
binary under `valgrind --tool=callgrind` with one worker, warm it up with wrk, zero the counters,
run wrk for a few seconds, dump, and print the instructions per request it served and, with
--top, the functions that ran the most of them (self cost). User space only: kernel time is not
counted. valgrind hides SHA-NI, so SHA-256 costs ~3.5k instructions per request here and far fewer
natively. Compare binaries measured in the same invocation. --keep copies each dump to
DIR/callgrind<i>.out for callgrind_annotate (e.g. `--inclusive=yes`, or `--tree=caller`).
"""

import argparse
import collections
import glob
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

COLD_KEYS = 100_000


def self_costs(path):
    """Instructions by function, self cost only, from a callgrind dump."""
    names, costs = {}, collections.Counter()
    fn, after_call = None, False
    for line in open(path):
        if line.startswith(("fn=", "cfn=")):
            m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
            if m and m.group(2):
                names[m.group(1)] = m.group(2)
            if line.startswith("fn="):
                fn = names.get(m.group(1)) if m else line[3:].strip()
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if not after_call and fn:
                costs[fn] += int(line.split()[1])
            after_call = False
    return costs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bins", nargs="+")
    p.add_argument("--scenario", choices=["hot", "cold", "reject"], default="hot")
    p.add_argument("--top", type=int, default=0)
    p.add_argument("--duration", type=int, default=4)
    p.add_argument("--keep", metavar="DIR", help="copy each dump here")
    args = p.parse_args()
    a = argparse.Namespace(bin=args.bins[0], duration=args.duration, runs=1, connections=16, workers=1, wrk_core="1",
                           hot_keys=1000, cache_entries=5000 if args.scenario == "cold" else 100000,
                           with_nginx=False, with_floor=False, scenarios=[])
    wait_port = bench.wait_port
    bench.wait_port = lambda port, timeout=60: wait_port(port, 60)  # valgrind starts slowly
    b = bench.Bench(a)
    try:
        b.setup()
        keys = {"hot": b.hot_keys, "reject": os.path.join(b.dir, "unknown.txt")}.get(args.scenario)
        if args.scenario == "cold":
            keys = os.path.join(b.dir, "cold.txt")
            b.admin("keys", "create-many", "--user", "loadtest", "--count", str(COLD_KEYS), "--scopes", "predict",
                    "--out", keys)
        for i, binary in enumerate(args.bins):
            out = os.path.join(b.dir, f"callgrind{i}.out")
            wrapper = os.path.join(b.dir, f"callgrind{i}.sh")
            with open(wrapper, "w") as f:
                f.write(f'#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={out} '
                        f'{os.path.abspath(binary)} "$@"\n')
            os.chmod(wrapper, 0o755)
            b.bin = wrapper
            port, admin = bench.free_port(), bench.free_port()
            _, proc = b.keygate(f"callgrind{i}", port, admin)
            # Cold: warm-up and each binary's run take keys no earlier run asked for.
            b.wrk(port, keys, offset=COLD_KEYS // 2 + i * 5000, duration=3)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
            r = b.wrk(port, keys, offset=i * (COLD_KEYS // 2 // len(args.bins)))
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
            time.sleep(1)
            dump = max(glob.glob(out + "*"), key=os.path.getmtime)
            costs = self_costs(dump)
            if args.keep:
                os.makedirs(args.keep, exist_ok=True)
                shutil.copy(dump, os.path.join(args.keep, f"callgrind{i}.out"))
            total = sum(costs.values())
            print(f"{binary}: {r['requests']} requests, {total // r['requests']} instructions per request "
                  f"({args.scenario}, non-2xx {r['non2xx']})", flush=True)
            for name, n in costs.most_common(args.top):
                print(f"  {n // r['requests']:7d}  {100 * n / total:4.1f}%  {name[:140]}")
            proc.terminate()
            proc.wait()
    finally:
        b.stop_all()


if __name__ == "__main__":
    main()
