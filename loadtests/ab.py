#!/usr/bin/env python3
"""Two keygate binaries under the same load, one run after the other: is B faster than A?

    python3 loadtests/ab.py [--scenario cold|hot] [--runs 5] [--duration 5] [--smoke] A B

Both instances share one Redis and one upstream, with 2 workers each and a 100,000-entry cache.
The runs alternate (A B, then B A, ...), so the machine's drift falls on both alike. cold: 1,000,000
keys are seeded. Each instance's cache is filled first by one discarded run. After that, every run
asks for keys that no earlier run of that instance asked for. hot: the 1,000 hot keys, all cached.

Prints each run, then the medians: req/s, keygate CPU per request (user + system), p99, and Redis
CPU per request (user + system; on a cold request Redis does as much work as keygate), and B/A.
Use it to measure a change. `run.sh` gives the figures against the baselines. --smoke (1 run of
1 s, 3,000 cold keys, a 1,000-entry cache) checks that the script works; the test command runs it.
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402



def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--scenario", choices=["cold", "hot"], default="cold")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    cold_keys, cache_entries = (3000, 1000) if args.smoke else (1_000_000, 100_000)
    if args.smoke:
        args.runs, args.duration = 1, 1
    a = argparse.Namespace(bin=args.a, duration=args.duration, runs=1, connections=64, workers=2, wrk_core="1",
                           hot_keys=1000, cache_entries=cache_entries, with_nginx=False, with_floor=False, scenarios=[])
    b = bench.Bench(a)
    try:
        b.setup()
        redis = [b.procs[0].pid]
        b.bin = os.path.abspath(args.b)
        port_b = bench.free_port()
        b.keygate("keygate-b", port_b, bench.free_port())
        targets = {"A": b.kg_port, "B": port_b}
        keys, per_run = b.hot_keys, 0
        if args.scenario == "cold":
            keys = os.path.join(b.dir, "cold.txt")
            b.admin("keys", "create-many", "--user", "loadtest", "--count", str(cold_keys), "--scopes", "predict",
                    "--out", keys)
            # A slice of the keys per run, and one for each instance's fill.
            per_run = cold_keys // (args.runs + 2)
            for i, (name, port) in enumerate(targets.items()):
                r = b.wrk(port, keys, offset=i * per_run)
                print(f"{name} fills its cache: {r['rps']:.0f} req/s", flush=True)
        results = {name: [] for name in targets}
        for run in range(args.runs):
            order = list(targets) if run % 2 == 0 else list(reversed(targets))
            for name in order:
                redis0 = b.cpu_times(redis)
                r = b.wrk(targets[name], keys, offset=(run + 2) * per_run)
                if per_run and r["requests"] > per_run and not args.smoke:
                    print(f"warning: {r['requests']} requests took more than the run's {per_run} keys; "
                          "later runs asked for some of them again (use a shorter --duration)")
                redis1 = b.cpu_times(redis)
                r["redis_us"] = 1e6 * (sum(redis1) - sum(redis0)) / max(r["requests"], 1)
                results[name].append(r)
                print(f"{name} run {run + 1}: {r['rps']:8.0f} req/s  keygate {r['user_us']:5.1f} + {r['sys_us']:5.1f} µs"
                      f"  p99 {r['p99_ms']:.2f} ms  Redis {r['redis_us']:5.1f} µs  non-2xx {r['non2xx']}", flush=True)
        median = {name: {f: statistics.median(r[f] for r in rs) for f in ["rps", "user_us", "sys_us", "p99_ms", "redis_us"]}
                  for name, rs in results.items()}
        for name, m in median.items():
            print(f"{name} median: {m['rps']:8.0f} req/s  keygate {m['user_us']:5.1f} + {m['sys_us']:5.1f} µs"
                  f"  p99 {m['p99_ms']:.2f} ms  Redis {m['redis_us']:5.1f} µs  runs "
                  f"{[round(r['rps']) for r in results[name]]}")
        print(f"B/A req/s {median['B']['rps'] / median['A']['rps']:.3f} ({args.scenario}, {args.runs} runs each)")
        refused = sum(r["non2xx"] for rs in results.values() for r in rs)
        if refused:
            sys.exit(f"ab: {refused} requests were refused: the figures measure errors, not the gateway")
    finally:
        b.stop_all()


if __name__ == "__main__":
    main()
