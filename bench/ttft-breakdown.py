#!/usr/bin/env python3
"""Where a lone request's time to first token goes in `tuili serve`.

Starts `tuili serve` (-t --threads, --parallel 4), then sends --requests streaming
/v1/completions requests one at a time (nothing else running, a pause between them), each a
prompt of random token ids (so tokenizing is no work) of every --prompt-lens length, and
splits each request's TTFT, as the client sees it, into:

- connect + request: the client's send to the handler's start (the handler's start is
  the response headers' arrival minus the access log's handler time);
- handler: the access log's time for the request (JSON parse, checks, the prompt's ids,
  the engine submission) to its response headers;
- engine: submission to the first sampled token (`tuili_time_to_first_token_seconds`,
  its sum's growth over the request);
- stream: the rest, first token to its SSE event at the client (detokenizing, the event's
  write, the loopback).

The engine's part is then set against the same prefill in `tuili bench` (pp at each
length, same threads): what the engine adds when serving (admission, sampling the first
token, waking the workers after idle), and, with --home (a calibrated profile), against
the TTFT `tuili plan --simulate` predicts for a lone request of that length. Prints a
table of medians in ms.

  bench/ttft-breakdown.py --model smol.gguf --threads 2 [--home $TUILI_HOME]
"""

import argparse
import asyncio
import json
import os
import re
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("serve_load", os.path.join(HERE, "serve-load.py"))
serve_load = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serve_load)
_spec = importlib.util.spec_from_file_location("check", os.path.join(HERE, "plan-serve-check.py"))
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


async def lone(args, prompt):
    """One streaming completion: (headers, first token) seconds after the send."""
    body = json.dumps({"model": "bench", "prompt": prompt, "max_tokens": args.output_len,
                       "stream": True, "temperature": 0, "ignore_eos": True}).encode()
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(args.host, args.port)
    try:
        writer.write((f"POST /v1/completions HTTP/1.1\r\nHost: {args.host}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                      "Connection: close\r\n\r\n").encode() + body)
        await writer.drain()
        status, headers = await serve_load.read_head(reader)
        t_head = time.perf_counter() - t0  # the headers come in one write
        if status != 200:
            raise SystemExit(f"HTTP {status}: {(await reader.read())[:200]!r}")
        t_first = None
        async for piece in serve_load._body(reader, headers):
            if t_first is None and b'"choices"' in piece:
                t_first = time.perf_counter() - t0
        return t_head, t_first
    finally:
        writer.close()


def access_ms(log, seen):
    """Handler times (ms) of the access-log lines for /v1/completions after the first
    `seen` of them."""
    log.seek(0)
    lines = re.findall(rb"POST /v1/completions 200 ([0-9.]+)ms", log.read())
    return [float(x) for x in lines[seen:]]


def engine_prefill_ms(args, lens):
    """`tuili bench`'s prefill time (ms) at each prompt length, same threads."""
    out = subprocess.run([args.tuili, "bench", "-m", args.model, "-t", str(args.threads),
                          "-p", ",".join(map(str, lens)), "-n", "1", "-r", "3", "-o",
                          "json"], check=True, capture_output=True, text=True)
    return {r["n_prompt"]: r["avg_ns"] / 1e6 for r in json.loads(out.stdout)
            if r.get("n_prompt")}


def planned_ms(args, n):
    """The simulator's TTFT (ms) of a lone request of `n` prompt tokens."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump([{"arrival_s": 0, "prompt_tokens": n, "output_tokens": args.output_len}], f)
    try:
        return check.simulate(args, 4, f.name)["ttft_ms"][0]
    finally:
        os.unlink(f.name)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tuili", default="target/release/tuili")
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-lens", default="32,128,512")
    p.add_argument("--output-len", type=int, default=8)
    p.add_argument("--requests", type=int, default=8, help="per prompt length")
    p.add_argument("--pause", type=float, default=0.5, help="seconds idle between requests")
    p.add_argument("--home", default=None, help="TUILI_HOME of a calibrated local profile")
    p.add_argument("--chip", default="local")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    args.model_name, args.api_key, args.ctx = "bench", None, 1024
    lens = [int(x) for x in args.prompt_lens.split(",")]
    rng = random.Random(7)
    rows = []
    flags = ["-t", str(args.threads), "--parallel", "4", "--ctx", "1024"]
    with serve_load.Server(args, flags) as server:
        asyncio.run(lone(args, [rng.randrange(1000, 40000) for _ in range(16)]))  # warm-up
        for n in lens:
            for _ in range(args.requests):
                time.sleep(args.pause)
                seen = len(access_ms(server.log, 0))
                m0 = serve_load.metrics(args)
                prompt = [rng.randrange(1000, 40000) for _ in range(n)]
                t_head, t_first = asyncio.run(lone(args, prompt))
                m1 = serve_load.metrics(args)
                (handler,) = access_ms(server.log, seen)[:1] or [float("nan")]
                engine = 1e3 * (m1["tuili_time_to_first_token_seconds_sum"]
                                - m0["tuili_time_to_first_token_seconds_sum"])
                ttft = 1e3 * t_first
                connect = 1e3 * t_head - handler
                rows.append({"prompt": n, "ttft": ttft, "connect": connect,
                             "handler": handler, "engine": engine,
                             "stream": ttft - connect - handler - engine,
                             "steps": m1["tuili_engine_steps_total"]
                             - m0["tuili_engine_steps_total"]})
    bench = engine_prefill_ms(args, lens)
    plan = {n: planned_ms(args, n) for n in lens} if args.home else {}
    print("| prompt | TTFT | connect + request | handler | engine | stream | "
          "tuili bench prefill | engine - prefill | planner's TTFT |")
    print("| --: | --: | --: | --: | --: | --: | --: | --: | --: |")
    for n in lens:
        med = {k: statistics.median(r[k] for r in rows if r["prompt"] == n)
               for k in ("ttft", "connect", "handler", "engine", "stream")}
        print(f"| {n} | {med['ttft']:.1f} | {med['connect']:.1f} | {med['handler']:.1f} | "
              f"{med['engine']:.1f} | {med['stream']:.1f} | {bench[n]:.1f} | "
              f"{med['engine'] - bench[n]:+.1f} | {plan.get(n, float('nan')):.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "bench_prefill_ms": bench, "planned_ttft_ms": plan}, f,
                      indent=2)


if __name__ == "__main__":
    sys.exit(main())
