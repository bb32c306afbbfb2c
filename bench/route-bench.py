#!/usr/bin/env python3
"""The longer `tuili route` measurement: the checks of tests/router/test_router.py at a
larger scale (--scale N multiplies their loops), plus an escalation threshold sweep, and a
Markdown table of the numbers for docs/BENCHMARKS.md.

usage: route-bench.py [--scale 4] [--thresholds -0.2,-0.35,-0.5,-0.8] [--json out.json]
Needs TUILI_TEST_MODELS_DIR (smol.gguf, qwen.gguf) and a built target/release/tuili.
"""
import argparse
import json
import os
import platform
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--thresholds", default="-0.2,-0.35,-0.5,-0.8")
    ap.add_argument("--json")
    a = ap.parse_args()
    os.environ["ROUTER_N"] = str(a.scale)
    sys.dont_write_bytecode = True  # no __pycache__ in the tree
    sys.path.insert(0, os.path.join(ROOT, "tests", "router"))
    import harness
    import test_router as t

    try:
        a_port, _ = harness.serve("edge-a")
        b_port, b_proc = harness.serve("edge-b")
        qwen_port, _ = harness.serve("qwen", "qwen.gguf")
        t.t_overhead(a_port, limit50=1.0, limit99=3.0)
        t.t_latency(a_port, b_port)
        sweep = []
        for th in [float(x) for x in a.thresholds.split(",")]:
            t.t_cost(a_port, qwen_port, th)
            sweep.append(dict(t.RESULTS["cost"]))
        t.t_failover(a_port, b_port, b_proc)
    finally:
        harness.Proc.stop_all()
    r = t.RESULTS
    load = os.getloadavg()
    print(f"\nCPU: {cpu()}, {os.cpu_count()} cores, load average {load[0]:.1f} at the end (shared machine)")
    o, lat, f = r["overhead"], r["latency"], r["failover"]
    print("\n| check | figures |\n|---|---|")
    print(f"| overhead (first byte, n={o['n']}) | direct p50 {o['direct_p50_ms']} ms, routed {o['routed_p50_ms']} ms: +{o['added_p50_ms']} ms; p99 {o['direct_p99_ms']} → {o['routed_p99_ms']} ms: +{o['added_p99_ms']} ms |")
    print(f"| latency policy (TTFT to first text, n={lat['n']}) | edge p50 {lat['edge_p50_ms']} ms, cloud behind 50 ms + 1% stalls {lat['cloud_p50_ms']} ms, routed {lat['routed_p50_ms']} ms ({lat['ratio']}× the best) |")
    print(f"| failover ({f['clients']} clients, {f['requests']} requests, one of two edges SIGKILLed) | failed {f['failed']}, duplicated {f['duplicated']}, p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms, p99 of requests in flight within 2 s of the kill {f['p99_during_failover_ms']} ms ({f['in_flight_at_kill']} requests), {f['failovers']} failovers |")
    for c in sweep:
        print(f"| escalation below {c['threshold']} | escalated {c['escalated']}, correct {c['routed_correct']} (always-large {c['always_large_correct']}), spent ${c['spent_usd']} vs always-large ${c['always_large_usd']} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"results": r, "sweep": sweep, "cpu": cpu(), "load": load}, fh, indent=1)
    if t.failures:
        sys.exit(f"{len(t.failures)} check(s) failed")


if __name__ == "__main__":
    main()
