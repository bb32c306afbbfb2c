"""Processes and HTTP for the router tests: `tuili serve` upstreams, `tuili route`, the
slow link, llama.cpp's server; requests with their time to first token."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TUILI = os.environ.get("TUILI_BIN") or os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"), "release", "tuili")
MODELS = os.environ.get("TUILI_TEST_MODELS_DIR", "")
LLAMACPP_PY = os.path.expanduser(os.environ.get("TUILI_LLAMACPP_PYTHON", "~/.cache/tuili/llamacpp-venv/bin/python"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Proc:
    """A child process with its log file; stopped at exit."""

    all = []

    def __init__(self, name, argv, env=None):
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"router-{name}-", suffix=".log", delete=False)
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        Proc.all.append(self)

    def text(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def kill(self, sig=signal.SIGKILL):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            self.p.wait(timeout=30)

    def alive(self):
        return self.p.poll() is None

    @classmethod
    def stop_all(cls):
        for p in cls.all:
            if p.alive():
                p.p.terminate()
        for p in cls.all:
            try:
                p.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.p.kill()
            os.unlink(p.log.name)
        cls.all.clear()


def wait_ok(port, proc, path="/health", timeout=300):
    t = time.time()
    while time.time() - t < timeout:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        if not proc.alive():
            sys.exit(f"{proc.name} exited:\n{proc.text()[-3000:]}")
        time.sleep(0.1)
    sys.exit(f"{proc.name} not ready on {path}:\n{proc.text()[-3000:]}")


NAMES = {"smol.gguf": "smollm2-135m", "qwen.gguf": "qwen2.5-coder-0.5b"}


def serve(name, model="smol.gguf", *extra):
    port = free_port()
    argv = [TUILI, "serve", "-m", os.path.join(MODELS, model), "--model-name", NAMES[model], "--port", str(port), "--ctx", "1024",
            "--parallel", "8", "-t", "1", *extra]
    p = Proc(name, argv)
    wait_ok(port, p)
    return port, p


def slowlink(name, upstream_port, *extra):
    port = free_port()
    p = Proc(name, [sys.executable, os.path.join(ROOT, "tests/router/slowlink.py"), str(port), str(upstream_port), *extra])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return port, p
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{name} did not start:\n{p.text()}")


def route(config_text, name="router", env=None):
    port = free_port()
    path = tempfile.NamedTemporaryFile(prefix="route-", suffix=".toml", delete=False).name
    with open(path, "w") as f:
        f.write(config_text.replace("LISTEN", f"127.0.0.1:{port}"))
    p = Proc(name, [TUILI, "route", "--config", path], env=env)
    wait_ok(port, p)
    return port, p, path


def wait_upstream(port, name, timeout=120):
    """Waits until the router's /health lists upstream `name` as up."""
    t = time.time()
    while time.time() - t < timeout:
        st, text = get(port, "/health")
        if name in json.loads(text).get("up", []):
            return
        time.sleep(0.1)
    sys.exit(f"upstream {name} never came up behind the router on port {port}")


def post(port, path, body, headers=None, timeout=120):
    """POST JSON; returns (status, headers, parsed body or text)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("POST", path, json.dumps(body), {"content-type": "application/json", **(headers or {})})
    r = c.getresponse()
    data = r.read()
    try:
        data = json.loads(data)
    except ValueError:
        data = data.decode(errors="replace")
    return r.status, dict(r.getheaders()), data


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read().decode(errors="replace")


# Time to the first byte instead of the first text: the router's own cost, free of the
# model's (tuili serve sends the role chunk before the prefill).
FIRST_BYTE = False


def stream(port, body, headers=None, conn=None):
    """A streaming chat request: (status, ttft seconds, events as parsed JSON or '[DONE]',
    headers). `conn` reuses a kept-alive connection."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.perf_counter()
    c.request("POST", "/v1/chat/completions", json.dumps({**body, "stream": True}),
              {"content-type": "application/json", **(headers or {})})
    r = c.getresponse()
    if r.status != 200:
        return r.status, None, [json.loads(r.read())], dict(r.getheaders())
    # TTFT is the time to the first event carrying text (servers send a role chunk first).
    ttft = None
    events = []
    buf = b""
    while True:
        chunk = r.read1(65536) if hasattr(r, "read1") else r.read(1)
        if not chunk:
            break
        if FIRST_BYTE and ttft is None:
            ttft = time.perf_counter() - t0
        buf += chunk.replace(b"\r", b"")
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            for line in ev.split(b"\n"):
                if line.startswith(b"data: "):
                    d = line[6:].decode()
                    e = d if d == "[DONE]" else json.loads(d)
                    events.append(e)
                    if ttft is None and isinstance(e, dict) and e.get("choices"):
                        c = e["choices"][0]
                        if (c.get("delta") or {}).get("content") or c.get("text"):
                            ttft = time.perf_counter() - t0
    return r.status, ttft, events, dict(r.getheaders())


def post_sse(port, path, body, headers=None):
    """A streaming POST on any SSE API: (status, headers, [(event name or None, parsed data
    or '[DONE]')]); a non-200 answer gives its parsed body as the one item."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("POST", path, json.dumps({**body, "stream": True}), {"content-type": "application/json", **(headers or {})})
    r = c.getresponse()
    raw = r.read()
    if r.status != 200:
        return r.status, dict(r.getheaders()), [json.loads(raw)]
    events = []
    for block in raw.decode(errors="replace").replace("\r", "").split("\n\n"):
        name, data = None, None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:] if line[6:] == "[DONE]" else json.loads(line[6:])
        if data is not None:
            events.append((name, data))
    return r.status, dict(r.getheaders()), events


def metric(port, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    _, text = get(port, "/metrics")
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(q / 100 * (len(xs) - 1)))))
    return xs[k]


def chat(text, max_tokens=8, **kw):
    return {"model": kw.pop("model", "smollm2-135m"), "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens, "temperature": 0, **kw}
