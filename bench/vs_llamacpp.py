#!/usr/bin/env python3
"""tuili vs llama.cpp on the same GGUF files, measured side by side in one run.

Run through bench/vs-llamacpp.sh, which installs the pinned llama-cpp-python into a venv
outside the repository and builds tuili. Definitions are llama-bench's, for both engines:

  ppN  tokens/s of one decode of N random tokens on an empty KV cache (n_batch = n_ubatch
       = 512, so 512 tokens are one batch), logits of the last token only;
  tgN  tokens/s of N single-token decodes of random tokens, from an empty cache.

Each engine warms up once per model and thread count, then the repetitions alternate
(tuili, llama.cpp, llama.cpp, tuili, ...), one model at a time, so slow drifts of the
machine (other processes, heat) hit both. tuili runs as `tuili bench -r 1 -o json` per
repetition (a fresh process per thread count is how its pool gets its size; each of
those processes warms up before it measures). The table shows mean ± sample stddev and
the ratio of the means.
"""

import argparse
import ctypes
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

import llama_cpp as L

# The targets: (test prefix, threads, which models, minimum tuili/llama.cpp).
TARGETS = [
    ("tg", 2, "real", 1.5),
    ("tg", 1, "real", 1.3),
    ("pp", 1, "real", 1.2),
    ("pp", 2, "real", 1.2),
    ("pp", 1, "synthetic", 1.0),
    ("pp", 2, "synthetic", 1.0),
]
# tg of Qwen2.5-0.5B with 2 threads must reach this share of the bandwidth bound.
QWEN_BW_TARGET = 65.0


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def csv_ints(s):
    try:
        vals = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{s}'")
    if not vals or any(v < 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got '{s}'")
    return vals


def tuili(args, *extra, capture=True):
    cmd = [args.tuili, *extra]
    r = subprocess.run(cmd, stdout=subprocess.PIPE if capture else None, text=True)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed with status {r.returncode}")
    return r.stdout


def tuili_json(args, *extra):
    return json.loads(tuili(args, "bench", "-o", "json", *extra))


class LlamaCpp:
    """One llama.cpp model, with one context per test as llama-bench makes them."""

    def __init__(self, path):
        mp = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            sys.exit(f"error: llama.cpp could not load {path}")
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.contexts = {}
        self.rng = random.Random(1)

    def context(self, test, n, threads):
        key = (test, n, threads)
        if key not in self.contexts:
            cp = L.llama_context_default_params()
            cp.n_ctx = n  # llama-bench: n_prompt + n_gen of the test
            cp.n_batch = 512
            cp.n_ubatch = 512
            cp.n_threads = threads
            cp.n_threads_batch = threads
            ctx = L.llama_init_from_model(self.model, cp)
            if not ctx:
                sys.exit(f"error: llama.cpp could not make a context of {n} tokens")
            self.contexts[key] = ctx
            self.run(test, n, threads)  # warm-up
        return self.contexts[key]

    def run(self, test, n, threads):
        """Seconds of one repetition of test (pp or tg) of n tokens."""
        ctx = self.context(test, n, threads)
        L.llama_memory_clear(L.llama_get_memory(ctx), False)
        if test == "pp":
            toks = (L.llama_token * n)(*[self.rng.randrange(self.n_vocab) for _ in range(n)])
            t0 = time.perf_counter_ns()
            for start in range(0, n, 512):
                m = min(512, n - start)
                ptr = ctypes.cast(ctypes.addressof(toks) + 4 * start, ctypes.POINTER(L.llama_token))
                if L.llama_decode(ctx, L.llama_batch_get_one(ptr, m)) != 0:
                    sys.exit("error: llama_decode failed on the prompt")
            L.llama_synchronize(ctx)
            return (time.perf_counter_ns() - t0) / 1e9
        tok = (L.llama_token * 1)(self.rng.randrange(self.n_vocab))
        t0 = time.perf_counter_ns()
        for _ in range(n):
            if L.llama_decode(ctx, L.llama_batch_get_one(tok, 1)) != 0:
                sys.exit("error: llama_decode failed in generation")
            L.llama_synchronize(ctx)
            tok[0] = self.rng.randrange(self.n_vocab)
        return (time.perf_counter_ns() - t0) / 1e9

    def close(self):
        for ctx in self.contexts.values():
            L.llama_free(ctx)
        L.llama_model_free(self.model)


def cpu_times():
    """(busy, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return sum(vals) - idle, sum(vals)


def wait_quiet(max_wait, busy_limit=0.10, window=1.0):
    """Waits (at most max_wait seconds) until the other processes use less than busy_limit
    of all cores over one window. The machine is shared: a compile next door halves the
    numbers. Returns whether it was quiet."""
    deadline = time.monotonic() + max_wait
    warned = False
    while True:
        a = cpu_times()
        time.sleep(window)
        b = cpu_times()
        if a is None or b is None:
            return True
        busy = (b[0] - a[0]) / max(1, b[1] - a[1])
        if busy < busy_limit:
            return True
        if time.monotonic() >= deadline:
            log(f"  machine still busy ({busy:.0%} of all cores), measuring anyway")
            return False
        if not warned:
            log(f"  machine busy ({busy:.0%} of all cores), waiting up to {max_wait:.0f}s")
            warned = True


class Usage:
    """CPU time used by everyone and by this process and its children since creation."""

    def __init__(self):
        self.all = cpu_times()
        self.ours = self._ours()
        self.wall = time.monotonic()

    @staticmethod
    def _ours():
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def others_share(self):
        """Share of all CPUs that other processes used since creation (0..1)."""
        now = cpu_times()
        if self.all is None or now is None:
            return 0.0
        tick = os.sysconf("SC_CLK_TCK")
        busy = (now[0] - self.all[0]) / tick
        wall = time.monotonic() - self.wall
        others = busy - (self._ours() - self.ours)
        return max(0.0, others) / max(1e-9, wall * (os.cpu_count() or 1))


def stats(v):
    m = statistics.fmean(v)
    return m, (statistics.stdev(v) if len(v) > 1 else 0.0)


def machine():
    """What the numbers were measured on: the CPU's identification (vendor, family, model,
    stepping, flags), its caches and core count. The same VM name hides different CPUs."""
    info = {"cpu": platform.processor() or "?", "cores": os.cpu_count()}
    keys = {"vendor_id": "vendor", "cpu family": "family", "model": "model",
            "model name": "cpu", "stepping": "stepping", "flags": "flags",
            "Features": "flags", "CPU implementer": "vendor", "CPU part": "model"}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                k, _, v = line.partition(":")
                k = k.strip()
                if k in keys:
                    info[keys[k]] = v.strip()
    except OSError:
        pass
    if "flags" in info:
        info["flags"] = info["flags"].split()
    caches = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for idx in sorted(os.listdir(base)):
            d = os.path.join(base, idx)
            try:
                level = open(os.path.join(d, "level")).read().strip()
                kind = open(os.path.join(d, "type")).read().strip()
                size = open(os.path.join(d, "size")).read().strip()
            except OSError:
                continue
            name = f"L{level}" + ("d" if kind == "Data" else "i" if kind == "Instruction" else "")
            caches[name] = size
    except OSError:
        pass
    info["caches"] = caches
    return info


def simd_flags(flags):
    """The flags that pick kernels, for the one-line summary."""
    want = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
            "avx512_bf16", "avx_vnni", "amx_tile", "asimd", "asimddp", "i8mm")
    return [f for f in flags if f in want]


def describe(m):
    ident = "/".join(str(m.get(k, "?")) for k in ("family", "model", "stepping"))
    caches = ", ".join(f"{k} {v}" for k, v in m.get("caches", {}).items())
    return (f"{m.get('cpu', '?')} ({m.get('vendor', '?')}, family/model/stepping {ident}; "
            f"{' '.join(simd_flags(m.get('flags', [])))}; {caches}), {m.get('cores')} cores")


def git_rev():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tuili", required=True, help="the tuili binary")
    ap.add_argument("-m", "--model", default="smollm2-135m,qwen2.5-coder-0.5b",
                    help="GGUF files or tuili model names, comma-separated")
    ap.add_argument("--synthetic", default="q8_0,q4_0,q4_k,f16",
                    help="weight types of SmolLM2-shaped random models ('' = none)")
    ap.add_argument("--synthetic-dir",
                    default=os.environ.get("TUILI_BENCH_DIR",
                                           os.path.expanduser("~/.cache/tuili/bench")))
    ap.add_argument("-t", "--threads", type=csv_ints, default=[1, 2])
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("--membw", action="store_true",
                    help="measure read bandwidth and show tg as %% of the bound")
    ap.add_argument("-o", "--output", choices=["md", "json"], default="md")
    ap.add_argument("--busy-limit", type=float, default=0.05,
                    help="a repetition during which other processes used more than this "
                         "share of the CPUs is measured again")
    ap.add_argument("--retries", type=int, default=10,
                    help="repetitions measured again per model and thread count, at most")
    ap.add_argument("--quiet-wait", type=float, default=60.0,
                    help="before each repetition, wait up to this many seconds for other "
                         "processes to leave the CPUs idle (0 = never wait)")
    a = ap.parse_args()
    if a.repetitions < 1 or a.n_prompt < 0 or a.n_gen < 0 or a.n_prompt + a.n_gen == 0:
        sys.exit("error: need -r >= 1 and some of -p, -n > 0")
    if min(a.threads) < 1:
        sys.exit("error: -t values must be at least 1")

    L.llama_backend_init()
    L.llama_log_set(QUIET, ctypes.c_void_p())

    models = []  # (path, kind)
    for m in [m for m in a.model.split(",") if m.strip()]:
        path = m if os.path.isfile(m) else tuili(a, "pull", m).strip()
        models.append((path, "real"))
    if a.synthetic:
        out = tuili(a, "bench", "--synthetic", a.synthetic, "--synthetic-dir", a.synthetic_dir,
                    "--write-only")
        models += [(p, "synthetic") for p in out.split()]

    mach = machine()
    sysinfo = L.llama_print_system_info().decode().strip()
    log(f"tuili binary: {a.tuili}")
    log(f"machine: {describe(mach)}; tuili {git_rev()}; "
        f"llama-cpp-python {L.__version__} ({sysinfo})")

    def measure_bw():
        """Read bandwidth per thread count, measured now: the VM's moves over minutes, so
        each model's tg rows are compared with a measurement taken just before them."""
        if not a.membw:
            return {}
        if a.quiet_wait > 0:
            wait_quiet(a.quiet_wait)
        tcsv = ",".join(map(str, a.threads))
        return {o["n_threads"]: o["avg_bytes_per_s"]
                for o in tuili_json(a, "--membw", "-t", tcsv)}

    tests = ([("pp", a.n_prompt)] if a.n_prompt else []) + ([("tg", a.n_gen)] if a.n_gen else [])
    rows = []
    if a.output == "md":
        print(f"machine: {describe(mach)}; date {datetime.date.today()}; tuili {git_rev()}; "
              f"llama-cpp-python {L.__version__}\n")
        extra = " read bw (GB/s) | tuili % bw | llama.cpp % bw |" if a.membw else ""
        print(f"| model | type | threads | test | tuili t/s | llama.cpp t/s | tuili / llama.cpp |{extra}")
        print("| --- | --- | --: | --- | --: | --: | --: |" + (" --: | --: | --: |" if a.membw else ""))
    membw_seen = {}  # threads -> bytes/s, the latest measurement (for the JSON's machine)
    for path, kind in models:
        bw = measure_bw()
        membw_seen.update(bw)
        log(f"{os.path.basename(path)}: loading llama.cpp")
        lc = LlamaCpp(path)
        for t in a.threads:
            ours = {name: [] for name, _ in tests}
            theirs = {name: [] for name, _ in tests}
            info = None
            busy_reps = 0
            rep = 0
            retries = 0
            while rep < a.repetitions:
                log(f"{os.path.basename(path)}: {t} threads, repetition {rep + 1}/{a.repetitions}")
                if a.quiet_wait > 0:
                    wait_quiet(a.quiet_wait)
                order = ["tuili", "llama.cpp"] if rep % 2 == 0 else ["llama.cpp", "tuili"]
                got_ours, got_theirs = {}, {}
                before = Usage()
                for engine in order:
                    if engine == "tuili":
                        res = tuili_json(a, "-m", path, "-t", str(t), "-p", str(a.n_prompt),
                                         "-n", str(a.n_gen), "-r", "1")
                        for o in res:
                            info = o
                            got_ours[o["test"][:2]] = o["avg_ts"]
                    else:
                        for name, n in tests:
                            got_theirs[name] = n / lc.run(name, n, t)
                others = before.others_share()
                if others > a.busy_limit and retries < a.retries:
                    # Someone else used the CPUs during this repetition: both engines'
                    # numbers of it are off, so it is measured again.
                    retries += 1
                    log(f"  other processes used {others:.0%} of the CPUs, repeating "
                        f"({retries}/{a.retries} retries used)")
                    continue
                if others > a.busy_limit:
                    busy_reps += 1
                for name, _ in tests:
                    ours[name].append(got_ours[name])
                    theirs[name].append(got_theirs[name])
                rep += 1
            for name, n in tests:
                om, osd = stats(ours[name])
                tm, tsd = stats(theirs[name])
                row = {
                    "model": os.path.basename(path), "kind": kind, "type": info["model_type"],
                    "threads": t, "test": f"{name}{n}", "tuili_ts": om, "tuili_sd": osd,
                    "llamacpp_ts": tm, "llamacpp_sd": tsd, "ratio": om / tm,
                    "tuili_samples": ours[name], "llamacpp_samples": theirs[name],
                    "tuili_peak_rss_bytes": info.get("peak_rss_bytes"),
                    "tuili_rss_budget_bytes": info.get("rss_budget_bytes"),
                    "disturbed_repetitions": busy_reps, "repeated": retries,
                }
                if name == "tg" and t in bw:
                    row["membw_bytes_per_s"] = bw[t]
                    bound = bw[t] / info["weight_bytes_per_token"]
                    row["bw_bound_ts"] = bound
                    row["tuili_bw_pct"] = 100 * om / bound
                    row["llamacpp_bw_pct"] = 100 * tm / bound
                rows.append(row)
                if a.output == "md":
                    pct = ""
                    if a.membw:
                        pct = (f" {bw[t] / 1e9:.1f} | {row['tuili_bw_pct']:.1f}% "
                               f"| {row['llamacpp_bw_pct']:.1f}% |"
                               if "bw_bound_ts" in row else " | | |")
                    busy = f" ({busy_reps} of {a.repetitions} reps disturbed)" \
                        if busy_reps else ""
                    print(f"| {row['model']} | {row['type']} | {t} | {row['test']} "
                          f"| {om:.2f} ± {osd:.2f} | {tm:.2f} ± {tsd:.2f} | {om / tm:.2f}{busy} |{pct}",
                          flush=True)
        lc.close()

    if a.output == "json":
        mach["membw_bytes_per_s"] = {str(t): v for t, v in membw_seen.items()}
        print(json.dumps({"machine": mach,
                          "date": str(datetime.date.today()), "tuili": git_rev(),
                          "tuili_bin": a.tuili,
                          "llama_cpp_python": L.__version__, "llama_cpp_system": sysinfo,
                          "rows": rows}, indent=1))
    else:
        print_targets(rows, a.n_prompt, a.n_gen)


def print_targets(rows, n_prompt, n_gen):
    """The issue's targets, each with the rows it applies to, PASS or FAIL."""
    lines = []
    for test, t, kind, need in TARGETS:
        for r in rows:
            if r["test"].startswith(test) and r["threads"] == t and r["kind"] == kind:
                ok = "PASS" if r["ratio"] >= need else "FAIL"
                lines.append(f"- {ok}: {r['test']} {t} threads {r['model']}: "
                             f"{r['ratio']:.2f}x (target >= {need}x)")
    for r in rows:
        if "qwen" in r["model"].lower() and r["test"].startswith("tg") and r["threads"] == 2 \
                and "tuili_bw_pct" in r:
            ok = "PASS" if r["tuili_bw_pct"] >= QWEN_BW_TARGET else "FAIL"
            lines.append(f"- {ok}: {r['test']} 2 threads {r['model']}: {r['tuili_bw_pct']:.1f}% "
                         f"of the bandwidth bound (target >= {QWEN_BW_TARGET}%)")
    for r in rows:
        peak, budget = r.get("tuili_peak_rss_bytes"), r.get("tuili_rss_budget_bytes")
        if peak and budget and r["test"].startswith("tg"):
            ok = "PASS" if peak <= budget else "FAIL"
            lines.append(f"- {ok}: peak RSS {r['model']} {r['threads']} threads: "
                         f"{peak / 2**20:.1f} MiB (budget file + KV + 64 MiB = {budget / 2**20:.1f} MiB)")
    if lines:
        print("\nTargets of the issue:\n" + "\n".join(lines))


@L.llama_log_callback
def QUIET(level, text, user_data):
    # Only errors (GGML_LOG_LEVEL_ERROR = 4) reach stderr.
    if level == 4:
        sys.stderr.write(text.decode(errors="replace"))


if __name__ == "__main__":
    main()
