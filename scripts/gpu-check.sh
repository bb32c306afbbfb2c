#!/usr/bin/env bash
# The CUDA backend on a real GPU: cross-backend op tests, perplexity of the real models
# against the CPU's figures, speed (decode single-stream and 64 streams, prefill pp512)
# and HBM bandwidth. Writes a short markdown report to $OUT/gpu-check.md when $OUT is set.
#
#   bash scripts/gpu-check.sh pack   # here (Rust toolchain, network): build and bundle
#   bash scripts/gpu-check.sh        # on the GPU machine (no Rust, no network): check
#
# The GPU machine has the CUDA toolkit, PyTorch and python3, but no Rust toolchain and
# no network, and a call to it carries at most 64 MiB of files. So:
#
# 1. `pack` (run where cargo is) builds `tuili` with `--features tuili-cli/cuda` and the
#    test binaries of tuili-cuda (cargo test --no-run), and lays out under
#    target/gpu-check/:
#      bin/        tuili, ops, probe (test binaries), GPL-3 (the perplexity text)
#      models/     smol.gguf.partNN, qwen.gguf.partNN: the two real models cut into
#                  pieces of 48 MiB (SmolLM2 Q4_1 is 94 MiB: 2 pieces; Qwen2.5-Coder
#                  0.5B is 469 MiB: 10 pieces), with their sha256 in models/SHA256SUMS.
#    It prints the device calls to make, in order.
# 2. Device calls, one after another while the machine stays warm (files carried into
#    ignored paths stay there between calls of one warm machine): the first carries
#    target/gpu-check/bin and models/SHA256SUMS, each next one carries one model piece
#    (`true` as the command), and the last runs `bash scripts/gpu-check.sh`. The
#    script joins the pieces it finds and checks their sha256; a model whose pieces are
#    not all there is skipped, and the report says so. For a short lease, carry only
#    SmolLM2's two pieces: the op tests, SmolLM2's perplexity and the bandwidth still run.
#
# Environment (all optional): TUILI_BIN (the binary; else target/gpu-check/bin/tuili,
# else a cargo build when cargo exists), TUILI_TEST_BINS (folder of the test binaries),
# TUILI_GPU_MODELS (folder with smol.gguf / qwen.gguf or their pieces), GPL3 (the text),
# CPU_PPL=1 (also compute the CPU perplexity here, to compare on one machine), OUT.
#
# Design note for later (not done yet): decode steps launch ~20 kernels per layer; the
# plan is to capture one decode step per batch size in a CUDA graph (buffers at fixed
# addresses, metadata uploaded into persistent device buffers) and replay it, which
# removes the per-launch gaps that dominate a 0.5B model's single-stream decode.
set -euo pipefail
cd "$(dirname "$0")/.."

pack_dir=target/gpu-check
piece_mib=48

# CPU figures this check compares with (docs/BENCHMARKS.md): perplexity of the whole
# GPL-3 text at -c 512 on the CPU.
cpu_ppl_smol=18.3001
cpu_ppl_qwen=5.3038

if [ "${1:-}" = pack ]; then
  target="${CARGO_TARGET_DIR:-target}"
  cargo build --release --features tuili-cli/cuda --bin tuili
  mkdir -p "$pack_dir/bin" "$pack_dir/models"
  cp "$target/release/tuili" "$pack_dir/bin/tuili"
  # The test binaries, by name, from cargo's own account of what it built.
  cargo test --release -p tuili-cuda --features cuda --no-run --message-format=json |
    python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] in ("ops", "probe"):
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["target"]["name"])
' "$pack_dir/bin"
  cp /usr/share/common-licenses/GPL-3 "$pack_dir/bin/GPL-3"
  rm -f "$pack_dir/models/"*.part* "$pack_dir/models/SHA256SUMS"
  for pair in smol:smollm2-135m qwen:qwen2.5-coder-0.5b; do
    short=${pair%%:*} name=${pair#*:}
    file=$("$pack_dir/bin/tuili" pull "$name")
    split -b "${piece_mib}M" -d -a 2 "$file" "$pack_dir/models/$short.gguf.part"
    (cd "$(dirname "$file")" && sha256sum "$(basename "$file")") |
      sed "s/ .*/  $short.gguf/" >>"$pack_dir/models/SHA256SUMS"
  done
  du -sh "$pack_dir/bin" "$pack_dir"/models/* | sed 's/^/  /'
  echo
  echo "device calls, in order (each carry is at most 64 MiB):"
  echo "  carry [\"$pack_dir/bin\", \"$pack_dir/models/SHA256SUMS\"]  command: true"
  for p in "$pack_dir"/models/smol.gguf.part* "$pack_dir"/models/qwen.gguf.part*; do
    echo "  carry [\"$p\"]  command: true"
  done
  echo "  command: bash scripts/gpu-check.sh   (timeout_s 500)"
  exit 0
fi

# ---- On the GPU machine ----------------------------------------------------------
started=$(date +%s)
report=$(mktemp)
say() { echo "$*"; echo "$*" >>"$report"; }
fail=0

bin_dir="${TUILI_TEST_BINS:-$pack_dir/bin}"
tuili="${TUILI_BIN:-$pack_dir/bin/tuili}"
if [ ! -x "$tuili" ] && command -v cargo >/dev/null; then
  cargo build --release --features tuili-cli/cuda --bin tuili
  tuili="${CARGO_TARGET_DIR:-target}/release/tuili"
fi
[ -x "$tuili" ] || { echo "no tuili binary: run 'scripts/gpu-check.sh pack' where cargo is, or set TUILI_BIN" >&2; exit 1; }

# cudarc opens libnvrtc.so / libcublas.so by their unversioned or .so.12 names; a CUDA
# 13 machine has .so.13 files (the toolkit's lib64, or pip's nvidia packages). Link each
# under the name looked for, in a folder put first on the library path.
shim=$(mktemp -d)
lib_dirs=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda*/targets/*/lib 2>/dev/null || true)
py_dirs=$(python3 -c 'import site,glob; print(" ".join(d for p in site.getsitepackages() for d in glob.glob(p+"/nvidia/*/lib")))' 2>/dev/null || true)
for lib in nvrtc cublas cublasLt; do
  found=""
  for d in $lib_dirs $py_dirs; do
    for f in "$d"/lib$lib.so*; do
      case "$f" in *alt*|*builtins*|*'*'*) continue ;; esac
      [ -e "$f" ] && { found=$f; break 2; }
    done
  done
  if [ -n "$found" ]; then
    ln -sf "$found" "$shim/lib$lib.so"
    export LD_LIBRARY_PATH="$shim:$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
done
export LD_LIBRARY_PATH="$shim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

say "# GPU check"
say ""
say "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'nvidia-smi not found')"
say ""
say '```'
"$tuili" info --devices | tee -a "$report"
say '```'

# ---- 1. Cross-backend op tests -----------------------------------------------------
say ""
say "## Op tests (GPU vs the CPU scalar reference)"
export TUILI_REQUIRE_GPU=1
for t in probe ops; do
  if [ -x "$bin_dir/$t" ]; then
    if "$bin_dir/$t" --test-threads 1 >"$report.$t" 2>&1; then
      say "- $t: $(grep -h '^test result' "$report.$t" | tail -1)"
    else
      fail=1
      say "- $t: FAILED"
      say '```'
      grep -h -E 'panicked|relative error|FAILED|error' "$report.$t" | head -20 | tee -a "$report"
      say '```'
    fi
  else
    say "- $t: skipped (no test binary at $bin_dir/$t; 'pack' builds it)"
  fi
done
unset TUILI_REQUIRE_GPU

# ---- 2. Perplexity of the real models ----------------------------------------------
models="${TUILI_GPU_MODELS:-$pack_dir/models}"
gpl3="${GPL3:-/usr/share/common-licenses/GPL-3}"
[ -f "$gpl3" ] || gpl3="$bin_dir/GPL-3"
# Joins pieces into NAME.gguf (once) and checks the sha256 when SHA256SUMS has it.
model_file() {
  local short=$1 f="$models/$1.gguf"
  if [ ! -f "$f" ] && ls "$models/$short.gguf.part"* >/dev/null 2>&1; then
    cat "$models/$short.gguf.part"* >"$f.tmp" && mv "$f.tmp" "$f"
  fi
  [ -f "$f" ] || return 1
  if [ -f "$models/SHA256SUMS" ] && grep -q " $short.gguf\$" "$models/SHA256SUMS"; then
    (cd "$models" && grep " $short.gguf\$" SHA256SUMS | sha256sum -c --quiet) || { rm -f "$f"; return 2; }
  fi
  echo "$f"
}
ppl_of() { sed -n 's/^Final estimate: PPL = \([0-9.]*\).*/\1/p'; }
say ""
say "## Perplexity, GPL-3, -c 512 (target: within 0.5% of the CPU)"
say ""
say "| model | CPU | GPU | difference | GPU time |"
say "| --- | ---: | ---: | ---: | ---: |"
bench_models=()
for pair in smol:$cpu_ppl_smol qwen:$cpu_ppl_qwen; do
  short=${pair%%:*} want=${pair#*:}
  if ! m=$(model_file "$short"); then
    say "| $short | $want | skipped: model not found under $models (or its sha256 is wrong) | | |"
    continue
  fi
  bench_models+=("$m")
  if [ ! -f "$gpl3" ]; then
    say "| $short | $want | skipped: no GPL-3 text | | |"
    continue
  fi
  if [ "${CPU_PPL:-0}" = 1 ]; then
    want=$("$tuili" perplexity -m "$m" -f "$gpl3" -c 512 --device cpu 2>/dev/null | ppl_of)
  fi
  t0=$(date +%s%N)
  got=$("$tuili" perplexity -m "$m" -f "$gpl3" -c 512 --device cuda 2>"$report.ppl.$short" | ppl_of || true)
  secs=$(python3 -c "print(f'{($(date +%s%N) - $t0) / 1e9:.1f}')")
  if [ -z "$got" ]; then
    fail=1
    say "| $short | $want | FAILED: $(tail -1 "$report.ppl.$short") | | |"
    continue
  fi
  diff=$(python3 -c "print(f'{100*($got/$want-1):+.3f}%')")
  ok=$(python3 -c "print(abs($got/$want-1) <= 0.005)")
  [ "$ok" = True ] || fail=1
  say "| $short | $want | $got | $diff $([ "$ok" = True ] && echo ok || echo MISS) | ${secs}s |"
done

# ---- 3. Speed and bandwidth ---------------------------------------------------------
say ""
say "## Speed (tuili bench --device cuda; bandwidth: device-to-device copy, read + write)"
say ""
if [ ${#bench_models[@]} -gt 0 ]; then
  list=$(IFS=,; echo "${bench_models[*]}")
  "$tuili" bench --device cuda -m "$list" -p 512 -n 128 --streams 64 -r 5 \
    --membw --membw-mib 4096 -o json >"$report.bench.json" 2>"$report.bench.err" || {
    fail=1; say "bench FAILED: $(tail -3 "$report.bench.err")"; }
  python3 - "$report.bench.json" <<'PY' | tee -a "$report"
import json, sys
try:
    rows = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"no bench results ({e})"); sys.exit(0)
print("| model | test | t/s | % of bandwidth bound |")
print("| --- | --- | ---: | ---: |")
by = {}
for r in rows:
    if r.get("test") == "membw":
        continue
    pct = r.get("bw_pct")
    print(f"| {r['model_type']} | {r['test']} | {r['avg_ts']:.1f} | {'' if pct is None else f'{pct:.1f}%'} |")
    by[(r["model_filename"], r["test"])] = r
print()
print("Targets (Qwen2.5-0.5B on H100/H200): tg128 >= 40% of the bandwidth bound; "
      "tg128x64 >= 10x tg128; pp512 >= 20000 t/s.")
for (f, t), r in sorted(by.items()):
    if "qwen" not in f.lower() or t != "tg128":
        continue
    single = r["avg_ts"]
    batched = by.get((f, "tg128x64"), {}).get("avg_ts")
    pp = by.get((f, "pp512"), {}).get("avg_ts")
    pct = r.get("bw_pct")
    print(f"- tg128: {single:.1f} t/s, {pct if pct is None else round(pct, 1)}% of the bound: {'ok' if pct and pct >= 40 else 'MISS'}")
    if batched:
        print(f"- tg128x64: {batched:.1f} t/s = {batched / single:.1f}x single: {'ok' if batched >= 10 * single else 'MISS'}")
    if pp:
        print(f"- pp512: {pp:.0f} t/s: {'ok' if pp >= 20000 else 'MISS'}")
PY
else
  "$tuili" bench --device cuda --membw --membw-mib 4096 -o md 2>&1 | tee -a "$report" || fail=1
  say "(no model found: bandwidth only)"
fi

say ""
say "Finished in $(( $(date +%s) - started ))s; $( [ $fail = 0 ] && echo 'all checks passed' || echo 'SOME CHECKS FAILED')."
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$report" "$OUT/gpu-check.md"
  for f in "$report".*; do cp "$f" "$OUT/$(basename "$f" | sed "s/^$(basename "$report")/gpu-check/")"; done
fi
exit $fail
