#!/usr/bin/env python3
"""Median decode speed per model, KV type and depth of `scripts/kv-types.sh bench` output
(JSON lines on stdin): each line's avg_ts is the mean of one run's repetitions."""
import json
import statistics
import sys

runs = {}
for line in sys.stdin:
    line = line.strip().rstrip(",")
    if not line.startswith("{"):
        continue
    o = json.loads(line)
    key = (o["model_filename"].split("/")[-1], o["type_k"], o["n_depth"])
    runs.setdefault(key, []).append(o["avg_ts"])
for (model, ty, depth), ts in sorted(runs.items()):
    print(f"{model} {ty:5} d{depth:<6} median {statistics.median(ts):7.2f} t/s of {len(ts)} runs: "
          + " ".join(f"{t:.2f}" for t in ts))
