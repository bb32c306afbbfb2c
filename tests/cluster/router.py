"""Two `tuili serve` replicas behind the real `vllm-router` (run by run.sh), one policy per
run: `python router.py POLICY ROUTER_URL REPLICA_URL...`.

- 200 requests from 16 clients, in four groups that share a long prefix, all succeed;
- with a prefix-aware policy (kv_aware, fed by tuili's KV events, or cache_aware), the
  requests of a group that follow its first one land on the replica that has the prefix,
  and that replica's vllm:prefix_cache_hits_total shows it served from its cache.
"""

import json
import os
import sys
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

POLICY, ROUTER, *REPLICAS = sys.argv[1:]
PREFIX_AWARE = POLICY in ("kv_aware", "cache_aware")

# Four long shared prefixes (about 150 tokens each), as system prompts are.
TOPICS = ["astronomy", "cooking", "sailing", "gardening"]
PREFIXES = [
    # A tag of this run first: its prefixes are new to both replicas.
    f"[{POLICY} {os.getpid()}] You are a patient expert in {t}. Answer in one short sentence, without "
    f"lists. " + " ".join(f"Rule {k}: stay on {t} and be exact." for k in range(10))
    for t in TOPICS
]


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=300) as r:
        assert r.status == 200
        return json.loads(r.read())


def counters(url: str) -> dict:
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name in ("vllm:prefix_cache_hits", "vllm:prompt_tokens"):
            (s,) = [s for s in fam.samples if s.name.endswith("_total")]
            out[fam.name] = s.value
    return out


def snapshot() -> list[dict]:
    return [counters(u) for u in REPLICAS]


def delta(before: list[dict], after: list[dict], key: str) -> list[float]:
    return [a[key] - b[key] for a, b in zip(after, before)]


def request(group: int, i: int) -> dict:
    return post(
        ROUTER + "/v1/completions",
        {
            "model": "smol",
            "prompt": PREFIXES[group] + f" Question {i}: name one fact, number {i}.",
            "max_tokens": 1,
            "temperature": 0,
        },
    )


def run(jobs: list[tuple[int, int]], clients: int) -> list:
    results, errors = [], []
    lock = threading.Lock()

    def work(mine):
        for g, i in mine:
            try:
                r = request(g, i)
                with lock:
                    results.append(r)
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(f"group {g} request {i}: {e}")

    threads = [threading.Thread(target=work, args=(jobs[k::clients],)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    return results


def main():
    # One group at a time: where does a shared prefix go?
    placements = []
    for g in range(len(PREFIXES) if PREFIX_AWARE else 0):
        before = snapshot()
        # The first request caches the prefix on some replica (its KV events reach the
        # router); the next five, one after another (no load to balance), follow it.
        run([(g, 0)], clients=1)
        time.sleep(0.3)
        run([(g, i) for i in range(1, 6)], clients=1)
        time.sleep(0.3)
        after = snapshot()
        prompt = delta(before, after, "vllm:prompt_tokens")
        hits = delta(before, after, "vllm:prefix_cache_hits")
        share = max(prompt) / sum(prompt)
        placements.append((g, share, prompt, hits))
        print(f"{POLICY}: group {g}: prompt tokens per replica {prompt}, prefix hits {hits}")
        if PREFIX_AWARE:
            top = prompt.index(max(prompt))
            assert share == 1.0, f"group {g} was split over the replicas: {prompt}"
            # The five found the shared prefix (over 128 tokens) cached there.
            assert hits[top] >= 5 * 128, f"group {g}: only {hits[top]} tokens hit"

    # 200 requests from 16 clients, the groups interleaved.
    before = snapshot()
    t0 = time.time()
    results = run([(i % len(PREFIXES), 100 + i) for i in range(200)], clients=16)
    took = time.time() - t0
    after = snapshot()
    assert len(results) == 200
    cached = sum(r["usage"]["prompt_tokens_details"]["cached_tokens"] for r in results)
    prompt = sum(r["usage"]["prompt_tokens"] for r in results)
    hits = delta(before, after, "vllm:prefix_cache_hits")
    print(
        f"{POLICY}: 200 requests from 16 clients in {took:.1f} s, all succeeded; "
        f"{cached}/{prompt} prompt tokens cached ({100 * cached / prompt:.0f}%), "
        f"prefix hits per replica {hits}"
    )
    assert sum(hits) == cached
    if PREFIX_AWARE:
        assert cached / prompt > 0.6, "a prefix-aware policy should mostly hit"


if __name__ == "__main__":
    main()
