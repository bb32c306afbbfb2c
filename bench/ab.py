#!/usr/bin/env python3
"""Paired A/B of two tuili binaries: `tuili bench -o json` runs of OLD and NEW alternated
round by round (the order flipped every round), and per test the median of the per-round
ratios NEW / OLD of tokens per second. Pairing cancels most of a shared machine's drift:
both sides of a ratio were measured seconds apart.

usage: ab.py OLD_BIN NEW_BIN [--rounds R] [-- tuili bench arguments]
  e.g. ab.py /tmp/old/tuili target/release/tuili --rounds 5 -- -m smol.gguf -p 512 -n 128 -t 1,2
Prints one line per test (model, test, threads): the median ratio, its min..max, and the
median tokens/s of each side; `--json FILE` also writes them.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run(binary, args):
    out = subprocess.run([binary, "bench", "-o", "json", *args], capture_output=True,
                         text=True, check=True, env={**os.environ, "TUILI_QUIET": "1"})
    return {(r["model_filename"], r["test"], r["n_threads"]): r["avg_ts"]
            for r in json.loads(out.stdout)}


def main():
    argv = sys.argv[1:]
    bench_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, bench_args = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    ratios, speeds = {}, {}
    for r in range(a.rounds):
        order = [("old", a.old), ("new", a.new)]
        if r % 2:
            order.reverse()
        got = {side: run(binary, bench_args) for side, binary in order}
        for key, new_ts in got["new"].items():
            old_ts = got["old"][key]
            ratios.setdefault(key, []).append(new_ts / old_ts)
            speeds.setdefault(key, {"old": [], "new": []})
            speeds[key]["old"].append(old_ts)
            speeds[key]["new"].append(new_ts)
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    rows = []
    for key, rs in sorted(ratios.items()):
        model, test, threads = key
        row = {"model": os.path.basename(model), "test": test, "threads": threads,
               "ratio_median": statistics.median(rs), "ratio_min": min(rs),
               "ratio_max": max(rs), "old_ts": statistics.median(speeds[key]["old"]),
               "new_ts": statistics.median(speeds[key]["new"]), "rounds": len(rs)}
        rows.append(row)
        print(f"{row['model']:32} {test:8} t={threads}: {row['ratio_median']:.3f}x "
              f"({row['ratio_min']:.3f}..{row['ratio_max']:.3f}); "
              f"old {row['old_ts']:.1f} t/s, new {row['new_ts']:.1f} t/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
