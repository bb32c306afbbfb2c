#!/usr/bin/env python3
"""Generate the quantization fixtures in crates/tuili-backend/tests/data/quant/.

The expected values come from the `gguf` Python package (`gguf.quants`), a numpy
implementation of ggml's block formats that shares no code with ours, so the Rust
test `tests/quant_fixtures.rs` checks our kernels against an independent reading of
the formats, bit for bit.

Each `<TYPE>.bin` is little-endian:

    b"TQFX"             magic
    u32 version         1
    u32 ggml type id
    u32 n               elements of the dequantize case
    u32 nbytes
    u8[nbytes]          random blocks (random bytes, sane f16 scales)
    f32[n]              gguf.quants.dequantize of those blocks
    u32 m               elements of the quantize case (0 where gguf has no quantizer)
    f32[m]              input
    u32 mbytes
    u8[mbytes]          gguf.quants.quantize of the input

Usage: python scripts/gen-quant-fixtures.py  (needs numpy and gguf; seeded, so
running it again writes the same files).
"""

import pathlib
import struct

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/tuili-backend/tests/data/quant"

N = 1024  # elements per case: 32 blocks of 32, or 4 super-blocks of 256

# Byte offsets of the f16 scale fields in each block (ggml-common.h).
SCALE_OFFSETS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}

# Types whose quantizer gguf implements; the K-quants have only dequantizers there.
QUANTIZABLE = {T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0}


def random_blocks(rng: np.random.Generator, qtype: T) -> np.ndarray:
    """Random bytes with every f16 scale replaced by a finite, sane value."""
    block, size = GGML_QUANT_SIZES[qtype]
    nblocks = N // block
    raw = rng.integers(0, 256, size=(nblocks, size), dtype=np.uint8)
    for off in SCALE_OFFSETS[qtype]:
        mag = 10.0 ** rng.uniform(-4.0, 0.5, size=nblocks)
        sign = rng.choice([-1.0, 1.0], size=nblocks)
        scales = (sign * mag).astype(np.float16)
        # Edge cases in the first blocks: zero, an f16 subnormal, the largest f16.
        scales[0] = 0.0
        scales[1] = np.float16(3e-6)
        scales[2] = np.float16(-65504.0)
        raw[:, off:off + 2] = scales.view(np.uint8).reshape(nblocks, 2)
    return raw.reshape(-1)


def random_floats(rng: np.random.Generator, qtype: T) -> np.ndarray:
    """Random bit patterns of a float type, NaNs excluded (they never compare equal)."""
    if qtype == T.F32:
        bits = rng.integers(0, 2**32, size=N, dtype=np.uint64).astype(np.uint32)
        bits = np.where((bits & 0x7F800000) == 0x7F800000, bits & 0xBFFFFFFF, bits)
        return bits.view(np.uint8)
    bits = rng.integers(0, 2**16, size=N, dtype=np.uint32).astype(np.uint16)
    exp_mask = np.uint16(0x7C00 if qtype == T.F16 else 0x7F80)
    mant_mask = np.uint16(0x03FF if qtype == T.F16 else 0x007F)
    is_nan = ((bits & exp_mask) == exp_mask) & ((bits & mant_mask) != 0)
    bits = np.where(is_nan, bits & ~mant_mask, bits)  # NaN -> infinity of that sign
    return bits.astype(np.uint16).view(np.uint8)


def quantize_input(rng: np.random.Generator, qtype: T) -> np.ndarray:
    """Gaussian blocks at scales from 1e-3 to 1e2, plus blocks ggml treats specially."""
    block = max(GGML_QUANT_SIZES[qtype][0], 32)
    nblocks = N // block
    scale = 10.0 ** rng.uniform(-3.0, 2.0, size=(nblocks, 1))
    x = (rng.standard_normal((nblocks, block)) * scale).astype(np.float32)
    x[0] = 0.0  # all zeros: d = 0
    x[1] = 0.7  # constant: max == min
    x[2] = 0.0
    x[2, 5] = -3.0  # a single spike
    x[3] = np.arange(block, dtype=np.float32) * 0.25 - 4.0  # exact grid points and ties
    x[4] = np.abs(x[4])  # all positive: the minimum is not zero
    if qtype in (T.F16, T.BF16):
        x[5, :4] = [1e6, -1e-7, np.inf, -np.inf]  # overflow, subnormal, infinities
    return x.reshape(-1)


def write_fixture(rng: np.random.Generator, qtype: T) -> pathlib.Path:
    if qtype in (T.F32, T.F16, T.BF16):
        raw = random_floats(rng, qtype)
    else:
        raw = random_blocks(rng, qtype)
    expect = quants.dequantize(raw, qtype).astype(np.float32, copy=False).reshape(-1)
    assert expect.size == N, (qtype.name, expect.size)

    out = bytearray(b"TQFX")
    out += struct.pack("<IIII", 1, int(qtype), N, raw.size)
    out += raw.tobytes()
    out += expect.astype("<f4").tobytes()
    if qtype in QUANTIZABLE:
        x = quantize_input(rng, qtype)
        with np.errstate(over="ignore"):  # F16's deliberate overflow to infinity
            q = np.asarray(quants.quantize(x, qtype)).view(np.uint8).reshape(-1)
        out += struct.pack("<I", x.size) + x.astype("<f4").tobytes()
        out += struct.pack("<I", q.size) + q.tobytes()
    else:
        out += struct.pack("<II", 0, 0)

    path = OUT / f"{qtype.name}.bin"
    path.write_bytes(bytes(out))
    return path


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    types = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
             T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
    for qtype in types:
        # One seed per type, so adding a type does not change the others' files.
        rng = np.random.default_rng(0x7A11 + int(qtype))
        path = write_fixture(rng, qtype)
        print(f"{path.relative_to(OUT.parents[4])}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
