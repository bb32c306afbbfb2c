"""`tuili route` with real processes on loopback: `tuili serve` upstreams (SmolLM2 as
device/edge, Qwen2.5-Coder as the larger tier), llama.cpp's server, an in-process local
upstream, and the userspace slow link (tests/router/slowlink.py) where the issue asks for
netem, which this kernel lacks.

Checks (each prints one `router:` line with its numbers):
  config     --check prints the table; a bad key is named
  privacy    a mixed prompt set: no private prompt reaches an upstream not allowed for it,
             read from the upstreams' ingress logs; reload under a live stream; refusal with
             nothing sent when the allowed tier is down; SIGHUP reload
  latency    the "cloud" copy behind 50 ms + loss: routed p50 TTFT within 10% of the best
             single upstream
  overhead   TTFT through the router against calling the upstream directly
  stream     a link cut mid-stream ends the stream with an error event; a whole request
             cut the same way is retried on another upstream
  affinity   conversations stay on one replica; the replicas' prefix-cache hits show it
  failover   16 clients, one of two edges killed mid-load: none failed, none duplicated
  cost       escalation SmolLM2 -> Qwen2.5 on a graded exact-answer set, by logprob and
             by a verifier (Qwen2.5 judging SmolLM2's answers)
  llamacpp   llama.cpp's server (llama-cpp-python) as an upstream
  serve      `tuili serve -m MODEL --route FILE`: one process, its model the local
             upstream; embeddings, Responses and Messages routed (streams too), a Messages
             stream cut mid-way ends with Anthropic's error event; --api-key guards it

Environment: TUILI_TEST_MODELS_DIR (smol.gguf, qwen.gguf), TUILI_BIN, ROUTER_N (scale of
the measured loops; the CI default is small), ROUTER_ONLY (comma list of checks).
"""

import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (LLAMACPP_PY, MODELS, TUILI, Proc, chat, free_port, get, metric, pct,  # noqa: E402
                     post, post_sse, route, serve, slowlink, stream, wait_ok, wait_upstream)

N = int(os.environ.get("ROUTER_N", "1"))
ONLY = set(filter(None, os.environ.get("ROUTER_ONLY", "").split(",")))
RESULTS = {}
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}", flush=True)


def report(name, **kv):
    RESULTS[name] = kv
    print(f"router: {name}: " + ", ".join(f"{k}={v}" for k, v in kv.items()), flush=True)


def upstream(name, tier, port, models, **kw):
    lines = [f'[[upstream]]\nname = "{name}"\ntier = "{tier}"\nurl = "http://127.0.0.1:{port}/v1"',
             f"models = {json.dumps(models)}"]
    for k, v in kw.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def local(name, models, privacy):
    smol = os.path.join(MODELS, "smol.gguf")
    return (f'[[upstream]]\nname = "{name}"\ntier = "device"\nurl = "local"\nmodels = {json.dumps(models)}\n'
            f'privacy = {json.dumps(privacy)}\nlocal_args = ["-m", "{smol}", "--ctx", "1024", "-t", "1"]\n')


# ---- config -------------------------------------------------------------------------------

def t_config():
    cfg = 'listen = "LISTEN"\n' + local("laptop", ["smollm2-135m"], ["private", "public"]) + \
        upstream("edge-a", "edge", 1, ["smollm2-135m"], price_in=0.02, price_out=0.05)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(cfg)
    out = subprocess.run([TUILI, "route", "--config", f.name, "--check"], capture_output=True, text=True)
    check(out.returncode == 0 and "laptop" in out.stdout and "edge-a" in out.stdout and "smollm2-135m -> laptop, edge-a" in out.stdout,
          f"--check prints the table: {out.stdout}{out.stderr}")
    with open(f.name, "w") as g:
        g.write(cfg.replace("price_in = 0.02", "price_in = -2"))
    bad = subprocess.run([TUILI, "route", "--config", f.name, "--check"], capture_output=True, text=True)
    check(bad.returncode != 0 and "upstream[1].price_in" in bad.stderr, f"a bad key is named: {bad.stderr}")
    with open(f.name, "w") as g:
        g.write(cfg.replace('"-t", "1"', '"--parallel", "zero"'))
    bad2 = subprocess.run([TUILI, "route", "--config", f.name, "--check"], capture_output=True, text=True)
    check(bad2.returncode != 0 and "local_args" in bad2.stderr and "laptop" in bad2.stderr, f"bad local_args are named: {bad2.stderr}")
    os.unlink(f.name)
    report("config", table_lines=len(out.stdout.splitlines()))


# ---- privacy, reload, refusal ---------------------------------------------------------------

PRIVATE = [
    ("email", "Summarize: contact {m} at jane.doe@example.com about the invoice."),
    ("card", "Is this card valid {m}: 4111 1111 1111 1111?"),
    ("secret", "Why does my key fail {m}? sk-proj-abcdefghijklmnopqrstuvwxyz123456"),
    ("phone", "Call {m} back at +1 415-555-0132 please."),
]
PUBLIC = ["What is the capital of France? {m}", "Name a color. {m}", "Say hello {m}."]


def logged(path):
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")


def t_privacy(smol_port, qwen_port):
    logs = {n: tempfile.NamedTemporaryFile(prefix=f"ingress-{n}-", delete=False).name for n in ("edge", "cloud", "edge2")}
    edge_link, _ = slowlink("link-edge", smol_port, "--log", logs["edge"])
    cloud_link, _ = slowlink("link-cloud", qwen_port, "--log", logs["cloud"])
    base = ('listen = "LISTEN"\n[probe]\ninterval_ms = 200\n[[route]]\nname = "auto"\nmodels = ["smollm2-135m", "qwen2.5-coder-0.5b"]\n'
            + upstream("edge", "edge", edge_link, ["smollm2-135m"], privacy=["public"], price_in=0.02, price_out=0.05)
            + upstream("cloud", "cloud", cloud_link, ["qwen2.5-coder-0.5b"], privacy=["public"], price_in=0.15, price_out=0.6))
    cfg1 = base + local("laptop", ["smollm2-135m"], ["private", "public"])
    port, router, path = route(cfg1)
    wait_upstream(port, "laptop")
    sent = []
    i = 0
    for _ in range(N):
        for kind, text in PRIVATE:
            i += 1
            m = f"ZQ{i:03d}"
            sent.append((m, "private", kind, text.format(m=m), {}))
        for text in PUBLIC:
            i += 1
            m = f"ZQ{i:03d}"
            sent.append((m, "public", "clean", text.format(m=m), {}))
        i += 1
        m = f"ZQ{i:03d}"
        sent.append((m, "private", "header", f"Tell me a joke {m}.", {"x-tuili-privacy": "private"}))
    where = {}
    for marker, cls, kind, text, hdr in sent:
        st, h, body = post(port, "/v1/chat/completions", chat(text, model="auto"), hdr)
        check(st == 200, f"{kind} request answered: {st} {body}")
        where[marker] = h.get("x-tuili-upstream")
    time.sleep(0.2)
    ingress = {n: logged(p) for n, p in logs.items()}
    priv = [m for m, c, *_ in sent if c == "private"]
    leaked = [m for m in priv for n in ("edge", "cloud") if m in ingress[n]]
    check(not leaked, f"private prompts reached a public-only upstream: {leaked}")
    check(all(where[m] == "laptop" for m in priv), f"private prompts answered on the device: {where}")
    public_seen = sum(1 for m, c, *_ in sent if c == "public" and (where[m] != "laptop") == any(m in ingress[n] for n in ("edge", "cloud")))
    check(public_seen == sum(1 for s in sent if s[1] == "public"), "every public prompt routed elsewhere shows in that upstream's ingress log")

    # Reload while a stream runs: the stream finishes, the new table applies to new requests.
    edge2_port, edge2 = serve("edge2")
    edge2_link, _ = slowlink("link-edge2", edge2_port, "--log", logs["edge2"])
    cfg2 = base + local("laptop", ["smollm2-135m"], ["public"]) + \
        upstream("edge2", "edge", edge2_link, ["smollm2-135m"], privacy=["private"])
    box = {}
    th = threading.Thread(target=lambda: box.update(r=stream(port, chat("Count from one to twenty.", max_tokens=48, model="smollm2-135m"))))
    th.start()
    time.sleep(0.3)
    with open(path, "w") as f:
        f.write(cfg2.replace("LISTEN", f"127.0.0.1:{port}"))
    st, _, body = post(port, "/admin/reload", {})
    check(st == 200, f"reload: {st} {body}")
    th.join()
    s_status, _, events, _ = box["r"]
    check(s_status == 200 and events and events[-1] == "[DONE]", f"a stream in flight across a reload finishes: {events[-2:]}")
    st, h, _ = post(port, "/v1/chat/completions", chat("Remind me: my email is bob@example.org ZR001", model="auto"))
    check(st == 200 and h.get("x-tuili-upstream") == "edge2", f"after reload a private prompt goes to edge2: {st} {h.get('x-tuili-upstream')}")
    check("ZR001" in logged(logs["edge2"]), "edge2's ingress log shows it")

    # Refusal: edge2, the only private tier now, goes down; nothing is sent anywhere.
    edge2.kill()
    time.sleep(0.8)
    before = {n: len(logged(p)) for n, p in logs.items()}
    st, _, body = post(port, "/v1/chat/completions", chat("My card is 4111 1111 1111 1111 ZR002", model="auto"))
    msg = body.get("error", {}).get("message", "") if isinstance(body, dict) else str(body)
    check(st == 403 and body["error"]["code"] == "privacy_no_allowed_upstream" and "'private'" in msg and "edge" in msg,
          f"refused naming class and tiers: {st} {body}")
    time.sleep(0.2)
    check(all("ZR002" not in logged(p)[before[n]:] for n, p in logs.items()), "a refused request sends nothing")
    refusals = metric(port, "tuili_router_privacy_refusals_total", **{"class": "private"})
    check(refusals >= 1, f"refusals counted: {refusals}")

    # SIGHUP reload back to the first config: private requests are served on the device.
    with open(path, "w") as f:
        f.write(cfg1.replace("LISTEN", f"127.0.0.1:{port}"))
    router.p.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    st, h, _ = post(port, "/v1/chat/completions", chat("My card is 4111 1111 1111 1111 ZR003", model="auto"))
    check(st == 200 and h.get("x-tuili-upstream") == "laptop", f"after SIGHUP the device serves private again: {st} {h}")
    decisions = [ln for ln in router.text().splitlines() if "decision id=" in ln]
    check(len(decisions) >= len(sent) + 3, f"one decision line per request: {len(decisions)}")
    report("privacy", private=len(priv), public=len(sent) - len(priv), leaked=len(leaked),
           refused_status=st and 403, reloads=int(metric(port, "tuili_router_reloads_total")))
    router.kill(signal.SIGTERM)
    for p in logs.values():
        os.unlink(p)


# ---- latency policy, overhead, stream break ----------------------------------------------------

def ttfts(port, body, n, conn_holder):
    import http.client
    out = []
    for _ in range(n):
        if conn_holder.get(port) is None:
            conn_holder[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        st, t, ev, _ = stream(port, body, conn=conn_holder[port])
        if st == 200 and ev and ev[-1] == "[DONE]":
            out.append(t)
    return out


def t_latency(edge_port, other_port):
    cloud_link, _ = slowlink("link-slow", other_port, "--delay-ms", "50", "--loss", "0.01")
    cfg = ('listen = "LISTEN"\n[probe]\ninterval_ms = 500\n' + upstream("edge", "edge", edge_port, ["smollm2-135m"])
           + upstream("cloud", "cloud", cloud_link, ["smollm2-135m"], price_in=0.1, price_out=0.4))
    port, router, _ = route(cfg)
    # A prompt of about 150 tokens: TTFT is prefill plus queueing, as in real traffic.
    text = ("The router sends each request to the upstream that serves it best. " * 12) + "Say one word."
    body = chat(text, max_tokens=2)
    conns = {}
    direct_edge, direct_cloud, routed, added = [], [], [], []
    # The p50 of ~30-70 ms TTFTs on a shared machine moves by several percent between runs
    # of 30, and a VM's hiccup can move one side's p50 alone: 90 interleaved pairs, and the
    # routed side's cost is judged pair by pair (each routed request against the direct
    # one beside it), so what the machine did meanwhile falls on both. The order within a
    # pair alternates, so neither side always follows the other.
    for k in range(45 * N + 45):
        if k % 3 == 0:
            direct_cloud += ttfts(cloud_link, body, 1, conns)
        if k % 2:
            e = ttfts(edge_port, body, 1, conns)
            r = ttfts(port, body, 1, conns)
        else:
            r = ttfts(port, body, 1, conns)
            e = ttfts(edge_port, body, 1, conns)
        direct_edge += e
        routed += r
        if e and r:
            added.append(r[0] - e[0])
    best = min(pct(direct_edge, 50), pct(direct_cloud, 50))
    r50 = pct(routed, 50)
    paired = pct(added, 50)
    went = [ln.split(" -> ")[1].split(" ")[0] for ln in router.text().splitlines() if "decision id=" in ln and " -> " in ln]
    check(best + paired <= best * 1.10,
          f"routed p50 TTFT within 10% of the best single upstream {best*1e3:.1f} ms: it added "
          f"{paired*1e3:.2f} ms (median over {len(added)} pairs; routed p50 {r50*1e3:.1f} ms)")
    report("latency", edge_p50_ms=round(pct(direct_edge, 50) * 1e3, 2), cloud_p50_ms=round(pct(direct_cloud, 50) * 1e3, 2),
           routed_p50_ms=round(r50 * 1e3, 2), added_p50_ms=round(paired * 1e3, 2), ratio=round((best + paired) / best, 3),
           n=len(routed), to_edge=went.count("edge"), to_cloud=went.count("cloud"))
    router.kill(signal.SIGTERM)


def t_overhead(edge_port, limit50=None, limit99=None):
    """The issue's bounds are 1 ms p50 and 3 ms p99 (bench/route-bench.py holds them, 200
    pairs). CI allows 2 ms p50 and no p99 bound: on the shared 2-core machine a third process
    in the chain waits for a CPU more often than the router works."""
    # The first byte (tuili serve's role chunk, sent before the prefill) measures what the
    # router adds free of the model's own variance; the router passes each event on as it
    # arrives, so the first token gets the same added time.
    harness.FIRST_BYTE = True
    cfg = 'listen = "LISTEN"\n[probe]\ninterval_ms = 1000\n' + upstream("edge", "edge", edge_port, ["smollm2-135m"])
    port, router, _ = route(cfg)
    body = chat("Hi", max_tokens=1)
    conns = {}
    d, r = [], []
    for _ in range(50 * N):
        d += ttfts(edge_port, body, 1, conns)
        r += ttfts(port, body, 1, conns)
    # Overhead per pair would mix two noisy runs; compare the distributions' quantiles.
    o50 = (pct(r, 50) - pct(d, 50)) * 1e3
    o99 = (pct(r, 99) - pct(d, 99)) * 1e3
    report("overhead", direct_p50_ms=round(pct(d, 50) * 1e3, 3), routed_p50_ms=round(pct(r, 50) * 1e3, 3),
           added_p50_ms=round(o50, 3), direct_p99_ms=round(pct(d, 99) * 1e3, 3), routed_p99_ms=round(pct(r, 99) * 1e3, 3),
           added_p99_ms=round(o99, 3), n=len(r))
    limit50 = limit50 or float(os.environ.get("ROUTER_OVERHEAD_P50_MS", "2"))
    check(o50 <= limit50, f"router adds {o50:.3f} ms p50 TTFT (limit {limit50})")
    if limit99 is not None:
        check(o99 <= limit99, f"router adds {o99:.3f} ms p99 TTFT (limit {limit99})")
    harness.FIRST_BYTE = False
    router.kill(signal.SIGTERM)


def t_stream_break(edge_port, other_port):
    def flaky_router(cut):
        link, _ = slowlink(f"link-cut{cut}", edge_port, "--cut", str(cut))
        cfg = ('listen = "LISTEN"\n[policy]\ndefault = "local-first"\n[breaker]\nfailures = 100\n'
               + upstream("flaky", "device", link, ["smollm2-135m"]) + upstream("edge", "edge", other_port, ["smollm2-135m"]))
        return route(cfg, name=f"router-cut{cut}")

    # 900 bytes: the head and a few events pass, then the link dies mid-stream.
    port, router, _ = flaky_router(900)
    st, _, events, h = stream(port, chat("Count from one to fifty.", max_tokens=64))
    last = events[-1] if events else None
    check(st == 200 and h.get("x-tuili-upstream") == "flaky" and isinstance(last, dict) and last.get("error", {}).get("code") == "upstream_stream_broken",
          f"a stream cut mid-way ends with an error event: {st} {last}")
    check("[DONE]" not in events and len(events) >= 2, f"events before the break, no [DONE] after it: {len(events)}")
    breaks = int(metric(port, "tuili_router_stream_breaks_total"))
    router.kill(signal.SIGTERM)
    # 200 bytes: a whole answer's head passes, its body does not; it is retried elsewhere.
    port, router, _ = flaky_router(200)
    st, h, body = post(port, "/v1/chat/completions", chat("Count from one to fifty.", max_tokens=64))
    check(st == 200 and h.get("x-tuili-upstream") == "edge", f"a whole request cut mid-body is retried elsewhere: {st} {h.get('x-tuili-upstream')} {body}")
    report("stream", events_before_break=len(events) - 1, error_event=bool(isinstance(last, dict) and "error" in last), stream_breaks=breaks,
           whole_retried_to=h.get("x-tuili-upstream"), failovers=int(metric(port, "tuili_router_failovers_total")))
    router.kill(signal.SIGTERM)


# ---- prefix affinity ---------------------------------------------------------------------------

def t_affinity(a_port, b_port):
    cfg = ('listen = "LISTEN"\n[affinity]\nblock_chars = 128\nblocks = 4\n'
           + upstream("edge-a", "edge", a_port, ["smollm2-135m"]) + upstream("edge-b", "edge", b_port, ["smollm2-135m"]))
    port, router, _ = route(cfg)
    hits = lambda: sum(metric(p, "vllm:prefix_cache_hits_total") for p in (a_port, b_port))  # noqa: E731
    before = hits()
    placed = {}
    for conv in range(4):
        system = f"Conversation {conv}. " + f"You are assistant number {conv}, terse and exact. " * 12
        msgs = [{"role": "system", "content": system}]
        for turn in range(3):
            msgs.append({"role": "user", "content": f"Turn {turn}: name a number."})
            st, h, body = post(port, "/v1/chat/completions", {"model": "smollm2-135m", "messages": msgs, "max_tokens": 4, "temperature": 0})
            check(st == 200, f"affinity request: {st} {body}")
            placed.setdefault(conv, set()).add(h.get("x-tuili-upstream"))
            msgs.append({"role": "assistant", "content": body["choices"][0]["message"]["content"]})
    check(all(len(v) == 1 for v in placed.values()), f"each conversation stays on one replica: {placed}")
    # Placement is a pure function of the prompts and the replica names: these four spread
    # over both (a latency-only choice would put them all on whichever was faster).
    check(len(set().union(*placed.values())) == 2, f"conversations spread over both replicas: {placed}")
    gained = hits() - before
    check(gained > 0, "the replicas' own metrics show prefix-cache hits")
    report("affinity", conversations=len(placed), replicas_used=len(set().union(*placed.values())),
           prefix_hit_tokens=int(gained))
    router.kill(signal.SIGTERM)


# ---- failover under load ---------------------------------------------------------------------

def t_failover(a_port, b_port, b_proc):
    # Each client's long first block pins it to a replica (prefix affinity), so both edges
    # hold requests when one is killed.
    cfg = ('listen = "LISTEN"\n[probe]\ninterval_ms = 200\n[affinity]\nblock_chars = 128\nblocks = 2\n'
           + upstream("edge-a", "edge", a_port, ["smollm2-135m"]) + upstream("edge-b", "edge", b_port, ["smollm2-135m"]))
    port, router, _ = route(cfg)
    clients, per = 16, 3 * N + 1
    total = clients * per
    done = []
    lock = threading.Lock()
    killed_at = {}

    def client(c):
        out = []
        for k in range(per):
            t0 = time.perf_counter()
            prefix = f"Client {c:02d}. " + "You answer questions about fruit in one word. " * 6
            st, h, body = post(port, "/v1/chat/completions", chat(f"{prefix}Question {k}: name a fruit.", max_tokens=12))
            t1 = time.perf_counter()
            out.append((c, k, st, h.get("x-tuili-upstream"), body.get("id") if isinstance(body, dict) else None, t0, t1))
            with lock:
                done.append(1)
                if len(done) == total // 3 and not killed_at:
                    killed_at["t"] = time.perf_counter()
                    b_proc.kill()
        return out

    with cf.ThreadPoolExecutor(clients) as ex:
        results = [r for f in [ex.submit(client, c) for c in range(clients)] for r in f.result()]
    failed = [r for r in results if r[2] != 200]
    ids = [r[4] for r in results if r[4]]
    check(not failed, f"no failed request: {failed[:3]}")
    check(len(ids) == total and len(set(ids)) == total, f"every request answered exactly once ({len(ids)} answers, {len(set(ids))} distinct)")
    moved = int(metric(port, "tuili_router_failovers_total"))
    check(moved >= 1, "the kill caught requests in flight on the killed edge (else nothing was tested)")
    ok = metric(port, "tuili_router_requests_total", outcome="ok")
    check(ok == total, f"the router counts {ok} answers for {total} requests")
    tk = killed_at["t"]
    during = [r[6] - r[5] for r in results if r[5] <= tk + 2.0 and r[6] >= tk]
    lat = [r[6] - r[5] for r in results]
    report("failover", clients=clients, requests=total, failed=len(failed), duplicated=len(ids) - len(set(ids)),
           p50_ms=round(pct(lat, 50) * 1e3), p99_ms=round(pct(lat, 99) * 1e3),
           p99_during_failover_ms=round(pct(during, 99) * 1e3), in_flight_at_kill=len(during),
           failovers=moved, answered_by_b=sum(1 for r in results if r[3] == "edge-b"), after_kill_on_b=sum(1 for r in results if r[3] == "edge-b" and r[5] > tk + 1))
    router.kill(signal.SIGTERM)


# ---- escalation and cost ---------------------------------------------------------------------

GRADED = [
    ("What is 2 + 2? Answer with the number only.", ["4"]),
    ("What is the capital of France? One word.", ["paris"]),
    ("What is 7 * 8? Answer with the number only.", ["56"]),
    ("What color is the sky on a clear day? One word.", ["blue"]),
    ("What is 15 - 6? Answer with the number only.", ["9"]),
    ("How many days are in a week? Answer with the number only.", ["7", "seven"]),
    ("What is the capital of Japan? One word.", ["tokyo"]),
    ("What is 12 * 12? Answer with the number only.", ["144"]),
    ("Which planet is known as the Red Planet? One word.", ["mars"]),
    ("What is the square root of 81? Answer with the number only.", ["9"]),
    ("In Python, what keyword defines a function? One word.", ["def"]),
    ("What is 100 / 4? Answer with the number only.", ["25"]),
]
PRICE_IN, PRICE_OUT = 0.15, 0.60


def graded(text, expected):
    t = (text or "").lower()
    return any(e in t for e in expected)


def t_cost(smol_port, qwen_port, threshold):
    cfg = ('listen = "LISTEN"\n[escalation]\nenabled = true\nmin_mean_logprob = ' + str(threshold) + '\n'
           '[[route]]\nname = "auto"\nmodels = ["smollm2-135m", "qwen2.5-coder-0.5b"]\npolicy = "cost"\n'
           + upstream("device", "device", smol_port, ["smollm2-135m"])
           + upstream("cloud", "cloud", qwen_port, ["qwen2.5-coder-0.5b"], price_in=PRICE_IN, price_out=PRICE_OUT))
    port, router, _ = route(cfg)
    routed_ok = large_ok = escalated = 0
    large_cost = 0.0
    for q, exp in GRADED:
        st, h, body = post(port, "/v1/chat/completions", chat(q, max_tokens=16, model="auto"))
        check(st == 200, f"routed {q}: {st} {body}")
        if st != 200:
            continue
        check(body["choices"][0].get("logprobs") is None, "logprobs the client did not ask for are stripped")
        esc = h.get("x-tuili-escalated") == "1"
        escalated += esc
        check(h.get("x-tuili-upstream") == ("cloud" if esc else "device"), f"escalated answers come from the larger tier: {h}")
        routed_ok += graded(body["choices"][0]["message"]["content"], exp)
        st, _, big = post(qwen_port, "/v1/chat/completions", chat(q, max_tokens=16, model="qwen2.5-coder-0.5b"))
        large_ok += graded(big["choices"][0]["message"]["content"], exp)
        u = big["usage"]
        large_cost += (PRICE_IN * u["prompt_tokens"] + PRICE_OUT * u["completion_tokens"]) / 1e6
    spent = metric(port, "tuili_router_spent_dollars_total")
    check(int(metric(port, "tuili_router_escalations_total")) == escalated, "escalations counted once each")
    check(spent <= large_cost * 1.0001, f"routed spend ${spent:.8f} is at most always-large ${large_cost:.8f}")
    n = len(GRADED)
    report("cost", threshold=threshold, questions=n, escalated=f"{escalated}/{n}", routed_correct=f"{routed_ok}/{n}",
           always_large_correct=f"{large_ok}/{n}", spent_usd=f"{spent:.8f}", always_large_usd=f"{large_cost:.8f}",
           all_cloud_usd=f"{metric(port, 'tuili_router_all_cloud_dollars_total'):.8f}")
    router.kill(signal.SIGTERM)

    # The same set judged by a verifier (Qwen2.5 asked "is this answer correct?") instead
    # of the logprob: every answer judged once, escalated when P(yes) < 0.5.
    vcfg = cfg.replace("min_mean_logprob = " + str(threshold), 'min_mean_logprob = -100\nverifier = "qwen2.5-coder-0.5b"\nverifier_min = 0.5')
    port, router, _ = route(vcfg, name="router-verifier")
    v_ok = v_esc = 0
    for q, exp in GRADED:
        st, h, body = post(port, "/v1/chat/completions", chat(q, max_tokens=16, model="auto"))
        check(st == 200, f"verified {q}: {st} {body}")
        if st != 200:
            continue
        v_esc += h.get("x-tuili-escalated") == "1"
        v_ok += graded(body["choices"][0]["message"]["content"], exp)
    check(int(metric(port, "tuili_router_verifications_total")) == n, "every answer went to the verifier once")
    check(int(metric(port, "tuili_router_escalations_total")) == v_esc, "verifier escalations counted once each")
    report("verifier", questions=n, escalated=f"{v_esc}/{n}", routed_correct=f"{v_ok}/{n}",
           spent_usd=f"{metric(port, 'tuili_router_spent_dollars_total'):.8f}")
    router.kill(signal.SIGTERM)


# ---- llama.cpp as an upstream ----------------------------------------------------------------

def t_llamacpp():
    if not os.path.exists(LLAMACPP_PY):
        if os.environ.get("TUILI_REQUIRE_LLAMACPP") == "1":
            check(False, f"{LLAMACPP_PY} missing")
        print("skipped: router: llamacpp: no llama-cpp-python venv")
        return
    ok = subprocess.run([LLAMACPP_PY, "-c", "import llama_cpp.server.app"], capture_output=True)
    if ok.returncode != 0:
        msg = "llama-cpp-python's server extras are missing (pip install 'llama-cpp-python[server]' deps)"
        if os.environ.get("TUILI_REQUIRE_LLAMACPP") == "1":
            check(False, msg)
        print(f"skipped: router: llamacpp: {msg}")
        return
    lport = free_port()
    lp = Proc("llamacpp", [LLAMACPP_PY, "-m", "llama_cpp.server", "--model", os.path.join(MODELS, "smol.gguf"),
                           "--port", str(lport), "--host", "127.0.0.1", "--n_ctx", "1024", "--n_threads", "1"])
    wait_ok(lport, lp, "/v1/models", timeout=120)
    cfg = 'listen = "LISTEN"\n' + upstream("llamacpp", "edge", lport, ["smollm2-135m"], health_path="/v1/models", metrics=False)
    port, router, _ = route(cfg)
    st, h, body = post(port, "/v1/chat/completions", chat("Say hello.", max_tokens=8))
    check(st == 200 and h.get("x-tuili-upstream") == "llamacpp" and body["choices"][0]["message"]["content"], f"llama.cpp answers: {st} {body}")
    sst, ttft, events, _ = stream(port, chat("Say hello.", max_tokens=8))
    check(sst == 200 and events and events[-1] == "[DONE]", f"llama.cpp streams through the router: {events[-2:]}")
    st2, _, body2 = post(port, "/v1/completions", {"model": "smollm2-135m", "prompt": "The sky is", "max_tokens": 4})
    check(st2 == 200 and body2["choices"][0]["text"] is not None, f"completions via llama.cpp: {st2} {body2}")
    report("llamacpp", chat_status=st, stream_events=len(events), ttft_ms=round((ttft or 0) * 1e3, 1),
           tokens=int(metric(port, "tuili_router_tokens_total", upstream="llamacpp")))
    router.kill(signal.SIGTERM)
    lp.kill(signal.SIGTERM)


# ---- tuili serve --route: one process; the other APIs -------------------------------------------

def t_serve_route(edge_port):
    cut_link, _ = slowlink("link-cut-msg", edge_port, "--cut", "900")
    # Cost policy, the device dearer: public traffic goes to the edge, private to the device.
    cfg = ('listen = "127.0.0.1:1"\n[policy]\ndefault = "cost"\n[breaker]\nfailures = 100\n'
           '[[upstream]]\nname = "laptop"\ntier = "device"\nurl = "local"\nmodel = "smollm2-135m"\nprivacy = ["private", "public"]\n'
           'price_in = 5.0\nprice_out = 5.0\n'
           + upstream("edge", "edge", edge_port, ["smollm2-135m"], privacy=["public"])
           + upstream("flaky", "edge", cut_link, ["smol-cut"], privacy=["public"])
           + 'model_map = { "smol-cut" = "smollm2-135m" }\n')
    with tempfile.NamedTemporaryFile("w", prefix="route-", suffix=".toml", delete=False) as f:
        f.write(cfg)
    # The same file under `tuili route` lacks the local model's arguments, and says so.
    bad = subprocess.run([TUILI, "route", "--config", f.name, "--check"], capture_output=True, text=True)
    check(bad.returncode != 0 and "upstream[0].local_args" in bad.stderr and "tuili serve" in bad.stderr,
          f"tuili route names the local upstream without local_args: {bad.stderr}")
    port = free_port()
    key = "k-serve-route"
    p = Proc("router-serve", [TUILI, "serve", "-m", os.path.join(MODELS, "smol.gguf"), "--route", f.name, "--port", str(port),
                              "--api-key", key, "--ctx", "1024", "-t", "1"])
    wait_ok(port, p)  # --port overrides the config's listen
    wait_upstream(port, "laptop")
    auth = {"authorization": f"Bearer {key}"}
    st, _, _ = post(port, "/v1/chat/completions", chat("Hi"))
    check(st == 401, f"--api-key guards the gateway: {st}")
    st, h, body = post(port, "/v1/chat/completions", chat("Mail jane.doe@example.com a hello."), auth)
    check(st == 200 and h.get("x-tuili-upstream") == "laptop", f"the command's own model answers the private request: {st} {h.get('x-tuili-upstream')} {body}")
    st, h, body = post(port, "/v1/embeddings", {"model": "smollm2-135m", "input": ["a cat", "a dog"]}, auth)
    check(st == 200 and len(body["data"]) == 2 and len(body["data"][0]["embedding"]) == 576, f"embeddings routed: {st} {str(body)[:200]}")
    st, h, ev = post_sse(port, "/v1/responses", {"model": "smollm2-135m", "input": "Name a color.", "max_output_tokens": 8}, auth)
    names = [n for n, _ in ev]
    check(st == 200 and names[-1] in ("response.completed", "response.incomplete") and "response.output_text.delta" in names, f"a Responses stream routed to its end: {st} {names}")
    # A conversation started on the device (private) and continued with a public turn
    # stays where the first response is stored; the edge would answer 404.
    first = {"model": "smollm2-135m", "input": "My name is Ada.", "max_output_tokens": 4}
    st, h, body = post(port, "/v1/responses", first, {**auth, "x-tuili-privacy": "private"})
    check(st == 200 and h.get("x-tuili-upstream") == "laptop", f"the first turn on the device: {st} {h.get('x-tuili-upstream')}")
    st, h, ev = post_sse(port, "/v1/responses", {**first, "input": "What is my name?", "previous_response_id": body["id"]}, auth)
    check(st == 200 and h.get("x-tuili-upstream") == "laptop", f"previous_response_id keeps the stream on the device: {st} {h.get('x-tuili-upstream')} {ev[:1]}")
    third_id = next(d["response"]["id"] for n, d in ev if n == "response.created")
    st, h, body = post(port, "/v1/responses", {**first, "input": "And again?", "previous_response_id": third_id}, auth)
    check(st == 200 and h.get("x-tuili-upstream") == "laptop", f"a streamed response's id pins too: {st} {h.get('x-tuili-upstream')} {body}")
    st, h, _ = post(port, "/v1/responses", {**first, "input": "A new talk."}, auth)
    check(st == 200 and h.get("x-tuili-upstream") == "edge", f"a new public conversation goes to the cheaper edge: {st} {h.get('x-tuili-upstream')}")
    anth = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    msg = {"model": "smollm2-135m", "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}]}
    st, h, body = post(port, "/v1/messages", msg, anth)
    check(st == 200 and body.get("type") == "message" and body["content"][0]["text"], f"a Messages request routed (x-api-key accepted): {st} {body}")
    st, h, ev = post_sse(port, "/v1/messages", msg, anth)
    check(st == 200 and ev[-1][0] == "message_stop", f"a Messages stream routed to its end: {st} {[n for n, _ in ev]}")
    # The flaky link dies after 900 bytes: the client gets Anthropic's error event.
    long = {**msg, "model": "smol-cut", "max_tokens": 64, "messages": [{"role": "user", "content": "Count from one to fifty."}]}
    st, h, ev = post_sse(port, "/v1/messages", long, anth)
    last = ev[-1] if ev else (None, None)
    check(st == 200 and h.get("x-tuili-upstream") == "flaky" and last[0] == "error" and last[1].get("error", {}).get("type") == "api_error"
          and "upstream_stream_broken" not in str([n for n, _ in ev[:-1]]) and ev[-2][0] != "message_stop",
          f"a Messages stream cut mid-way ends with an error event: {st} {ev[-3:]}")
    report("serve", embeddings=2, responses_events=len(names), messages_events_before_break=len(ev) - 1)
    p.kill(signal.SIGTERM)
    os.unlink(f.name)


def want(name):
    return not ONLY or name in ONLY


def main():
    try:
        if want("config"):
            t_config()
        a_port, _ = serve("edge-a")
        b_port, b_proc = serve("edge-b")
        qwen_port = None
        if want("privacy") or want("cost"):
            qwen_port, _ = serve("qwen", "qwen.gguf")
        if want("privacy"):
            t_privacy(a_port, qwen_port)
        if want("overhead"):
            t_overhead(a_port)
        if want("latency"):
            t_latency(a_port, b_port)
        if want("stream"):
            t_stream_break(a_port, b_port)
        if want("cost"):
            t_cost(a_port, qwen_port, float(os.environ.get("ROUTER_ESCALATE_BELOW", "-0.35")))
        if want("llamacpp"):
            t_llamacpp()
        if want("affinity"):
            t_affinity(a_port, b_port)
        if want("serve"):
            t_serve_route(a_port)
        if want("failover"):
            t_failover(a_port, b_port, b_proc)
    finally:
        out = os.environ.get("ROUTER_RESULTS")
        if out:
            with open(out, "w") as f:
                json.dump(RESULTS, f, indent=1)
        if failures:
            for p in Proc.all:
                if p.name.startswith("router"):
                    print(f"--- {p.name} log (last 30 lines) ---\n" + "\n".join(p.text().splitlines()[-30:]))
        Proc.stop_all()
    if failures:
        sys.exit(f"{len(failures)} router check(s) failed")
    print("router: all checks passed")


if __name__ == "__main__":
    main()
