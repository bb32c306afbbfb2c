#!/usr/bin/env python3
"""Load generator for `tuili serve` (any OpenAI-compatible server), standard library only.

N concurrent streaming clients on loopback with bounded request counts; reports aggregate
generated tokens/s, time-to-first-token and inter-token latency (p50/p99) and errors.

Modes:
  load        --clients N --requests M: the plain load test.
  scale       1 client, then 8 clients: ratio of aggregate generated tokens/s (goal >= 3x),
              --rounds times; judged on the median round.
  prefix      20 sequential requests sharing a ~500-token system prompt: prefix-cache hit rate
              from /metrics (goal > 90%) and TTFT of requests 2..20 vs the first (goal < 1/4).
  overload    200 requests from 32 clients (run the server with --max-queue 8): each ends in a
              full answer or a 429, none hangs, server memory stays flat, serves afterwards.
  disconnect  50 clients that leave mid-stream: then /metrics shows 0 running sequences and
              every KV block free.
  soak        --minutes M (default 30) of moderate load from --clients clients (4 is moderate on
              2 cores) on a server with 4 slots of 2048 tokens: answers of varied length, every third round a wave of clients that
              leave mid-stream. Judged on: no error, server RSS after the warm-up (the first
              sixth, at most 5 minutes) within 5% of its first sample, and every KV block
              free at the end.
  structured  rounds of 8 unconstrained streams, then the same 8 under a JSON schema
              (response_format json_schema): ratio of aggregate generated tokens/s (goal
              >= 0.9) and the grammar mask time per token (p50/p99) from /metrics.
  all         every check above but soak, each on a fresh server started with --tuili/--model.

Either point it at a running server (--url) or let it start one (--tuili target/release/tuili
--model smol.gguf), which `all` needs (each check gets its own server and flags).
Every request has a timeout; every loop is bounded; only loopback addresses are used.
"""

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

QUESTIONS = [
    "What is the capital of France?", "Name three colors.", "Write a haiku about rain.",
    "Explain gravity briefly.", "What is 17 times 3?", "Give me a fruit.", "Say hello.",
    "What day comes after Monday?", "Describe a cat.", "Suggest a book title.",
]


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Result:
    def __init__(self):
        self.status = None
        self.ttft = None
        self.itl = []
        self.tokens = 0
        self.error = None
        self.elapsed = 0.0
        self.retry_after = None


async def stream_request(host, port, body, key=None, leave_after=None, timeout=300.0):
    """POST /v1/chat/completions with stream=true; timestamps every content chunk.
    leave_after=k closes the connection after k content chunks (a client that goes away)."""
    r = Result()
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(_stream(host, port, body, key, leave_after, r, t0), timeout)
    except asyncio.TimeoutError:
        r.error = f"timeout after {timeout:.0f}s"
    except (OSError, ValueError, asyncio.IncompleteReadError) as e:
        r.error = f"{type(e).__name__}: {e}"
    r.elapsed = time.perf_counter() - t0
    return r


async def _stream(host, port, body, key, leave_after, r, t0):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        data = json.dumps(body).encode()
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n")
        if key:
            head += f"Authorization: Bearer {key}\r\n"
        writer.write(head.encode() + b"\r\n" + data)
        await writer.drain()
        r.status, headers = await read_head(reader)
        r.retry_after = headers.get("retry-after")
        if r.status != 200:
            raw = await reader.read()
            r.error = f"HTTP {r.status}: {raw[:200]!r}"
            return
        buf = b""
        last = None
        chunks = 0
        async for piece in _body(reader, headers):
            buf += piece
            while b"\n\n" in buf:
                frame, buf = buf.split(b"\n\n", 1)
                if not frame.startswith(b"data: "):
                    continue
                payload = frame[6:]
                if payload == b"[DONE]":
                    return
                ev = json.loads(payload)
                if "error" in ev:
                    r.error = f"in-stream error: {ev['error'].get('message')}"
                    return
                if ev.get("usage"):
                    r.tokens = ev["usage"]["completion_tokens"]
                for c in ev.get("choices", []):
                    if c.get("delta", {}).get("content"):
                        now = time.perf_counter()
                        if last is None:
                            r.ttft = now - t0
                        else:
                            r.itl.append(now - last)
                        last = now
                        chunks += 1
                        if leave_after is not None and chunks >= leave_after:
                            return
        r.error = "stream ended without [DONE]"
    finally:
        writer.close()


async def read_head(reader):
    """An HTTP response's status and headers (names in lower case)."""
    status = int((await reader.readline()).split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            return status, headers
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()


async def _body(reader, headers):
    if "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            if size == 0:
                return
            yield await reader.readexactly(size)
            await reader.readline()
    else:
        yield await reader.read()


def chat_body(model, messages, max_tokens, ignore_eos=True):
    return {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}, "temperature": 0,
            "ignore_eos": ignore_eos}


# A schema with room for long answers, so that constrained streams run as long as free ones.
BENCH_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "items": {"type": "array", "items": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "qty": {"type": "integer"},
                           "kind": {"enum": ["fruit", "tool", "book", "other"]}},
            "required": ["name", "qty", "kind"]}},
    },
    "required": ["title", "items"],
}


async def run_clients(args, clients, requests, max_tokens, leave_after=None, messages_for=None,
                      schema=None):
    """`clients` workers share a pool of `requests` requests."""
    queue = list(range(requests))
    results = []

    async def worker(w):
        while queue:
            i = queue.pop()
            msgs = (messages_for(i) if messages_for else
                    [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}])
            body = chat_body(args.model_name, msgs, max_tokens)
            if schema is not None:
                body["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": "bench", "schema": schema}}
            results.append(await stream_request(args.host, args.port, body, args.api_key,
                                                leave_after, args.timeout))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    return results, time.perf_counter() - t0


def summary(results, wall):
    ok = [r for r in results if r.error is None]
    toks = sum(r.tokens for r in ok)
    itl = [x for r in ok for x in r.itl]
    ttft = [r.ttft for r in ok if r.ttft is not None]
    statuses = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    return {
        "requests": len(results), "ok": len(ok), "errors": len(results) - len(ok),
        "statuses": statuses, "wall_s": wall, "generated_tokens": toks,
        "tokens_per_s": toks / wall if wall > 0 else 0.0,
        "ttft_p50_ms": 1e3 * pct(ttft, 50), "ttft_p99_ms": 1e3 * pct(ttft, 99),
        "itl_p50_ms": 1e3 * pct(itl, 50), "itl_p99_ms": 1e3 * pct(itl, 99),
        "first_errors": [r.error for r in results if r.error][:3],
    }


def fmt(s):
    return (f"{s['requests']} requests, {s['ok']} ok, {s['errors']} errors, "
            f"{s['generated_tokens']} tokens in {s['wall_s']:.2f}s = {s['tokens_per_s']:.1f} tok/s; "
            f"TTFT p50 {s['ttft_p50_ms']:.0f} ms p99 {s['ttft_p99_ms']:.0f} ms; "
            f"ITL p50 {s['itl_p50_ms']:.1f} ms p99 {s['itl_p99_ms']:.1f} ms")


def get(args, path):
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    req = urllib.request.Request(f"http://{args.host}:{args.port}{path}", headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read().decode()


def metrics(args):
    out = {}
    for line in get(args, "/metrics").splitlines():
        m = re.match(r"^([a-z_]+) ([0-9.eE+-]+|NaN)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def histogram_quantiles(args, name, qs=(50, 99)):
    """Quantiles (upper bucket bounds) of a Prometheus histogram on /metrics."""
    buckets = []
    for line in get(args, "/metrics").splitlines():
        m = re.match(rf'^{name}_bucket{{le="([^"]+)"}} ([0-9.eE+-]+)$', line)
        if m:
            buckets.append((float(m.group(1)), float(m.group(2))))
    if not buckets or buckets[-1][1] == 0:
        return {q: float("nan") for q in qs}
    total = buckets[-1][1]
    return {q: next(le for le, c in buckets if c >= q / 100 * total) for q in qs}


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------- checks

def check_load(args):
    res, wall = asyncio.run(run_clients(args, args.clients, args.requests, args.max_tokens))
    s = summary(res, wall)
    print(f"load: {args.clients} clients: {fmt(s)}")
    return {"load": s}


def paired_rounds(args, check, first, second):
    """`args.rounds` rounds of two phases, each (label, clients, extra run_clients kwargs),
    seconds apart: on a shared machine the speed drifts by tens of percent within minutes,
    so each round's ratio (second's tokens/s over first's) compares like with like, and a
    check is judged on the median round."""
    per_client = args.requests_per_client
    rounds = []
    for r in range(args.rounds):
        round_ = {}
        for label, clients, kw in (first, second):
            res, wall = asyncio.run(run_clients(args, clients, clients * per_client,
                                                args.max_tokens, **kw))
            round_[label] = summary(res, wall)
            print(f"{check}: round {r + 1}: {label}: {fmt(round_[label])}")
        a, b = round_[first[0]]["tokens_per_s"], round_[second[0]]["tokens_per_s"]
        round_["ratio"] = b / a if a else float("nan")
        print(f"{check}: round {r + 1}: ratio {round_['ratio']:.3f}")
        rounds.append(round_)
    median = statistics.median(x["ratio"] for x in rounds)
    errors = sum(x[label]["errors"] for x in rounds for label in (first[0], second[0]))
    ratios = ", ".join(f"{x['ratio']:.3f}" for x in rounds)
    return rounds, median, errors, ratios


def check_scale(args):
    rounds, median, errors, ratios = paired_rounds(
        args, "scale", ("one", 1, {}), ("eight", 8, {}))
    ok = median >= 3.0 and errors == 0
    print(f"scale: ratios {ratios}; median {median:.2f}x "
          f"(goal >= 3x, zero errors: {errors} errors): {'PASS' if ok else 'FAIL'}")
    return {"scale": {"rounds": rounds, "ratio": median, "errors": errors, "pass": ok}}


def check_structured(args):
    """8 free streams, then the same 8 under BENCH_SCHEMA; the grammar's mask time from
    /metrics."""
    rounds, median, errors, ratios = paired_rounds(
        args, "structured", ("free", 8, {}), ("json", 8, {"schema": BENCH_SCHEMA}))
    mask = histogram_quantiles(args, "tuili_grammar_mask_seconds")
    wait = histogram_quantiles(args, "tuili_grammar_mask_wait_seconds")
    ok = median >= 0.9 and errors == 0
    print(f"structured: ratios {ratios}; median {median:.3f} "
          f"(goal >= 0.9, zero errors: {errors} errors): {'PASS' if ok else 'FAIL'}")
    print(f"structured: mask time per token p50 <= {1e3 * mask[50]:.3f} ms, p99 <= {1e3 * mask[99]:.3f} ms; "
          f"wait after the forward pass p50 <= {1e3 * wait[50]:.3f} ms, p99 <= {1e3 * wait[99]:.3f} ms")
    return {"structured": {"rounds": rounds, "ratio": median, "errors": errors, "pass": ok,
                           "mask_p50_s": mask[50], "mask_p99_s": mask[99],
                           "wait_p50_s": wait[50], "wait_p99_s": wait[99]}}


def check_prefix(args):
    # ~500 tokens of shared system prompt (numbered facts tokenize to ~10 tokens each).
    system = "You are a helpful assistant. Facts you know: " + " ".join(
        f"Fact {i}: the number {i} is {'even' if i % 2 == 0 else 'odd'}." for i in range(38))
    before = metrics(args)
    ttfts = []
    for i in range(20):
        msgs = [{"role": "system", "content": system},
                {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]
        res, _ = asyncio.run(run_clients(args, 1, 1, 8, messages_for=lambda _i, m=msgs: m))
        if res[0].error:
            print(f"prefix: request {i + 1} failed: {res[0].error}")
        ttfts.append(res[0].ttft or float("nan"))
    after = metrics(args)
    q = after["tuili_prefix_cache_queries_tokens_total"] - before["tuili_prefix_cache_queries_tokens_total"]
    h = after["tuili_prefix_cache_hits_tokens_total"] - before["tuili_prefix_cache_hits_tokens_total"]
    prompt = (after["tuili_prompt_tokens_total"] - before["tuili_prompt_tokens_total"]) / 20
    rate = h / q if q else 0.0
    first, rest = ttfts[0], ttfts[1:]
    rest_p50, rest_max = pct(rest, 50), max(rest)
    ok = rate > 0.9 and rest_max < first / 4
    print(f"prefix: {prompt:.0f} prompt tokens per request; hit rate {100 * rate:.1f}% "
          f"({h:.0f}/{q:.0f} tokens) (goal > 90%)")
    print(f"prefix: TTFT first {1e3 * first:.0f} ms; requests 2..20 p50 {1e3 * rest_p50:.0f} ms, "
          f"max {1e3 * rest_max:.0f} ms (goal < {1e3 * first / 4:.0f} ms): {'PASS' if ok else 'FAIL'}")
    return {"prefix": {"hit_rate": rate, "prompt_tokens": prompt, "ttft_first_ms": 1e3 * first,
                       "ttft_rest_p50_ms": 1e3 * rest_p50, "ttft_rest_max_ms": 1e3 * rest_max,
                       "pass": ok}}


def check_overload(args):
    # Three rounds: memory after the later ones stays near the first when nothing leaks (the
    # first rounds also touch mapped weights and KV pages for the first time).
    rounds, rss = [], []
    for _ in range(3):
        res, wall = asyncio.run(run_clients(args, 32, 200, args.max_tokens))
        rss.append(rss_kib(args.server_pid) if args.server_pid else None)
        full = sum(1 for r in res if r.status == 200 and r.error is None)
        busy = sum(1 for r in res if r.status == 429 and r.retry_after == "1")
        other = [r.error for r in res if not (r.status == 200 and r.error is None) and r.status != 429]
        rounds.append((full, busy, other, wall))
    after, _ = asyncio.run(run_clients(args, 1, 1, 8))
    normal = after[0].error is None
    ok = all(f + b == 200 and not o for f, b, o, _ in rounds) and normal
    for i, (full, busy, other, wall) in enumerate(rounds):
        mem = f"; server RSS {rss[i] / 1024:.0f} MiB" if rss[i] else ""
        print(f"overload: round {i + 1}: 200 requests from 32 clients in {wall:.1f}s: {full} full "
              f"answers, {busy} x 429, {len(other)} other{mem}")
        if other:
            print(f"overload: first failures: {other[:3]}")
    print(f"overload: a request afterwards: {'ok' if normal else 'FAILED'}: {'PASS' if ok else 'FAIL'}")
    return {"overload": {"rounds": [{"full": f, "busy": b, "other": len(o), "wall_s": w}
                                    for f, b, o, w in rounds],
                         "rss_kib": rss, "after_ok": normal, "pass": ok}}


def check_disconnect(args):
    before = metrics(args)
    res, wall = asyncio.run(run_clients(args, 50, 50, 400, leave_after=3))
    left = sum(1 for r in res if r.status == 200)
    deadline = time.time() + 30
    while True:
        m = metrics(args)
        drained = m["tuili_running_sequences"] == 0 and m["tuili_kv_blocks_used"] == 0 \
            and m["tuili_queue_depth"] == 0
        if drained or time.time() > deadline:
            break
        time.sleep(0.05)
    waited = time.time() - (deadline - 30)
    generated = m["tuili_generated_tokens_total"] - before["tuili_generated_tokens_total"]
    ok = drained and left == 50
    print(f"disconnect: 50 clients left after 3 chunks ({left} had started streaming); "
          f"{waited:.2f}s later: running {m['tuili_running_sequences']:.0f}, "
          f"KV blocks used {m['tuili_kv_blocks_used']:.0f}, free {m['tuili_kv_blocks_free']:.0f}; "
          f"{generated:.0f} tokens generated in all (of 20000 asked): {'PASS' if ok else 'FAIL'}")
    return {"disconnect": {"started": left, "running": m["tuili_running_sequences"],
                           "kv_used": m["tuili_kv_blocks_used"], "kv_free": m["tuili_kv_blocks_free"],
                           "generated": generated, "pass": ok}}


def check_soak(args):
    t_start = time.time()
    end = t_start + 60 * args.minutes
    warm_end = t_start + min(300, 60 * args.minutes / 6)
    long_system = "You are a helpful assistant. " + " ".join(
        f"Note {i}: keep answers short and plain." for i in range(30))
    lengths = [32, 64, 128, 256]
    samples, errors, first_errors = [], 0, []
    requests = tokens = rounds = 0
    while time.time() < end:
        rounds += 1
        leave = 3 if rounds % 3 == 0 else None

        def messages(i, r=rounds):
            q = {"role": "user", "content": QUESTIONS[(i + r) % len(QUESTIONS)]}
            return [{"role": "system", "content": long_system}, q] if i % 4 == 0 else [q]

        res, wall = asyncio.run(run_clients(args, args.clients, 2 * args.clients,
                                            lengths[rounds % len(lengths)], leave_after=leave,
                                            messages_for=messages))
        bad = [r.error for r in res if r.error is not None]
        errors += len(bad)
        first_errors += bad[:3 - len(first_errors)]
        requests += len(res)
        tokens += sum(r.tokens for r in res)
        rss = rss_kib(args.server_pid) if args.server_pid else None
        m = metrics(args)
        samples.append({"t_s": time.time() - t_start, "rss_kib": rss,
                        "kv_used": m.get("tuili_kv_blocks_used")})
        print(f"soak: {samples[-1]['t_s'] / 60:5.1f} min, round {rounds}: {len(res)} requests "
              f"({'leaving after 3 chunks' if leave else 'whole answers'}) in {wall:.1f}s, "
              f"{len(bad)} errors; RSS {rss / 1024 if rss else float('nan'):.1f} MiB", flush=True)
    # Every request has ended: the engine must hold nothing.
    deadline = time.time() + 30
    while True:
        m = metrics(args)
        drained = (m["tuili_running_sequences"] == 0 and m["tuili_kv_blocks_used"] == 0
                   and m["tuili_queue_depth"] == 0)
        if drained or time.time() > deadline:
            break
        time.sleep(0.05)
    after = [s["rss_kib"] for s in samples if s["t_s"] >= warm_end - t_start and s["rss_kib"]]
    base = after[0] if after else None
    spread = (max(after) - min(after)) / base if base else float("nan")
    flat = base is not None and max(after) <= 1.05 * base and min(after) >= 0.95 * base
    ok = errors == 0 and flat and drained
    print(f"soak: {args.minutes:g} min, {rounds} rounds, {requests} requests, {tokens} tokens, "
          f"{errors} errors {first_errors}")
    if base:
        print(f"soak: RSS after the warm-up: first {base / 1024:.1f} MiB, min {min(after) / 1024:.1f}, "
              f"max {max(after) / 1024:.1f} ({100 * spread:.1f}% spread; goal within 5% of the first)")
    print(f"soak: at the end: running {m['tuili_running_sequences']:.0f}, KV blocks used "
          f"{m['tuili_kv_blocks_used']:.0f}, free {m['tuili_kv_blocks_free']:.0f}: "
          f"{'PASS' if ok else 'FAIL'}")
    return {"soak": {"minutes": args.minutes, "rounds": rounds, "requests": requests,
                     "tokens": tokens, "errors": errors, "first_errors": first_errors,
                     "samples": samples, "rss_flat": flat, "drained": drained, "pass": ok}}


# ------------------------------------------------------------------------ server

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """`tuili serve` on a free loopback port for the duration of a `with` block."""

    def __init__(self, args, extra):
        self.args, self.extra = args, extra

    def __enter__(self):
        a = self.args
        a.host, a.port = "127.0.0.1", free_port()
        cmd = [a.tuili, "serve", "-m", a.model, "--host", a.host, "--port", str(a.port),
               "--model-name", a.model_name] + self.extra
        if a.api_key:
            cmd += ["--api-key", a.api_key]
        # The server's log goes to a file: an unread pipe would fill and stall it.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log)
        a.server_pid = self.proc.pid
        for _ in range(600):
            try:
                get(a, "/health")
                return self
            except OSError:
                if self.proc.poll() is not None:
                    self.log.seek(0)
                    raise SystemExit(f"tuili serve exited: {self.log.read().decode()}")
                time.sleep(0.1)
        raise SystemExit("tuili serve did not become healthy within 60 s")

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        self.args.server_pid = None


CHECKS = {
    "load": (check_load, []),
    "scale": (check_scale, ["--parallel", "8"]),
    "structured": (check_structured, ["--parallel", "8"]),
    "prefix": (check_prefix, []),
    "overload": (check_overload, ["--max-queue", "8", "--parallel", "8"]),
    "disconnect": (check_disconnect, ["--parallel", "16", "--max-queue", "64"]),
    # A pool of 4 contexts of 2048 tokens, so that the warm-up touches every KV page.
    "soak": (check_soak, ["--parallel", "4", "--ctx", "2048"]),
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=list(CHECKS) + ["all"])
    p.add_argument("--url", default=None, help="a running server, e.g. http://127.0.0.1:8080")
    p.add_argument("--tuili", default="target/release/tuili", help="binary to start a server with")
    p.add_argument("--model", default=None, help="GGUF file for a started server")
    p.add_argument("--model-name", default="bench")
    p.add_argument("--api-key", default=os.environ.get("TUILI_API_KEY"))
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--requests-per-client", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5, help="scale: rounds of 1 client then 8")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--server-args", default="", help="extra `tuili serve` flags")
    p.add_argument("--json", default=None, help="write all numbers to this file")
    p.add_argument("--minutes", type=float, default=30.0, help="soak: how long to run")
    args = p.parse_args()
    args.server_pid = None
    modes = [m for m in CHECKS if m != "soak"] if args.mode == "all" else [args.mode]
    report = {}
    if args.url:
        if args.mode == "all":
            raise SystemExit("`all` starts its own servers: give --tuili and --model, not --url")
        u = urllib.parse.urlparse(args.url)
        if u.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("this benchmark only targets loopback addresses")
        args.host, args.port = u.hostname, u.port or 80
        fn, _ = CHECKS[args.mode]
        report.update(fn(args))
    else:
        if not args.model:
            raise SystemExit("give --url of a running server, or --model (and --tuili) to start one")
        for mode in modes:
            fn, flags = CHECKS[mode]
            with Server(args, flags + args.server_args.split()):
                report.update(fn(args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    failed = [k for k, v in report.items() if isinstance(v, dict) and v.get("pass") is False]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
