"""HF tokenizer directories written from a GGUF's vocabulary, and the Python `tokenizers`
package's ids on a fixture corpus, for crates/tuili-tokenizer/tests/hf.rs.

Usage: python tests/hf/tokenizers_fixture.py MODEL.gguf OUT_DIR

Writes OUT_DIR/tokenizer.json, tokenizer_config.json (BOS/EOS and the chat template of the
GGUF) and OUT_DIR/expected.json: {"texts": [...], "ids": [[...], ...]} with the ids of
`Tokenizer.encode(text, add_special_tokens=False)`.

The tokenizer.json is built with the `tokenizers` API from the GGUF's tokens, merges and
token types, with the pipeline the real SmolLM2, Qwen2.5 and Gemma 3 tokenizer.json files
declare (SmolLM2: `Digits(individual_digits)` then `ByteLevel`; Qwen2.5: NFC, the Qwen2
`Split` regex, then `ByteLevel` without its own regex; Gemma 3: spaces replaced by `▁`,
byte fallback, merges derived from the SentencePiece scores the way transformers'
`SentencePieceExtractor` derives them), and special tokens as added tokens. So HF's
own code splits and merges the text, and tuili reads the same file through its own
converter and BPE: ids equal on the corpus show the two pipelines agree.

Needs `tokenizers` and `gguf` (no torch).
"""

from __future__ import annotations

import json
import pathlib
import sys

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+")

TEXTS = [
    "Hello, world! This is a test.",
    "中文测试：你好，世界！今天天气很好。",
    "emoji 😀🎉👍🏽 and 🇫🇷 flags, ZWJ 👩‍👩‍👧‍👦",
    "   leading spaces, \t\ttabs,\n\n\nnewlines   and trailing   ",
    "numbers 1234567 3.14159 1,000,000 and x86_64",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after a special token<|endoftext|>",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "I'm sure they'll've done it; DON'T WE'RE",
    "mixed 日本語のテキスト and 한국어 텍스트 with Ελληνικά",
    "code: def f(x):\n    return x**2  # comment\r\n",
    "",
    " ",
    "\u00e9t\u00e9 caf\u00e9 na\u00efve",
]


def field(r: gguf.GGUFReader, key: str):
    f = r.fields.get(key)
    return None if f is None else f.contents()


def main(model: str, out: str) -> None:
    r = gguf.GGUFReader(model)
    pre = field(r, "tokenizer.ggml.pre")
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    vocab = {t: i for i, t in enumerate(tokens)}
    if field(r, "tokenizer.ggml.model") == "llama":
        # SentencePiece: merges as transformers' SentencePieceExtractor derives them from the
        # scores (every split of a normal token into two tokens, by the token's score).
        scores = field(r, "tokenizer.ggml.scores")
        merges = []
        for i, t in enumerate(tokens):
            if types[i] != 1:
                continue
            local = [(t[:k], t[k:]) for k in range(1, len(t)) if t[:k] in vocab and t[k:] in vocab]
            local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
            merges.extend((a, b, scores[i]) for a, b in local)
        merges.sort(key=lambda m: -m[2])
        unk = tokens[int(field(r, "tokenizer.ggml.unknown_token_id"))]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[(a, b) for a, b, _ in merges], unk_token=unk,
                                   byte_fallback=True, fuse_unk=True))
        tok.normalizer = normalizers.Replace(" ", "\u2581")
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
        pre = "spm"
    else:
        merges = field(r, "tokenizer.ggml.merges")
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=False))
    if pre == "spm":
        pass
    elif pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    elif pre == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_RE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        sys.exit(f"no fixture pipeline for pre-tokenizer {pre!r}")
    if pre != "spm":
        tok.decoder = decoders.ByteLevel()
    # Control tokens (type 3) are special added tokens; user-defined ones (4) plain added ones.
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i, t in enumerate(types) if t == 3])
    tok.add_tokens([AddedToken(tokens[i], special=False, normalized=False)
                    for i, t in enumerate(types) if t == 4])
    d = pathlib.Path(out)
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    cfg = {}
    for key, name in (("bos_token", "tokenizer.ggml.bos_token_id"), ("eos_token", "tokenizer.ggml.eos_token_id")):
        if (i := field(r, name)) is not None:
            cfg[key] = tokens[int(i)]
    if (t := field(r, "tokenizer.chat_template")) is not None:
        cfg["chat_template"] = t
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=1))
    # Read back from the file, as a user of the directory would.
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    ids = [tok.encode(t, add_special_tokens=False).ids for t in TEXTS]
    (d / "expected.json").write_text(json.dumps({"texts": TEXTS, "ids": ids}, ensure_ascii=False))


if __name__ == "__main__":
    main(*sys.argv[1:3])
