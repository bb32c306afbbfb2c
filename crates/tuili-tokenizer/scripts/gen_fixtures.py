#!/usr/bin/env python3
"""Generate the reference fixtures in crates/tuili-tokenizer/tests/data/.

Needs: gguf, tokenizers, transformers, jinja2, sentencepiece, regex (no torch).
Usage:  python gen_fixtures.py MODELS_DIR   (MODELS_DIR holds smol.gguf and qwen.gguf)

What each file is and where its truth comes from:

- tokenize_smol.json, tokenize_qwen.json: token ids of a varied corpus, from the Hugging Face
  `tokenizers` library with the tokenizer transformers builds from the GGUF
  (transformers.integrations.gguf.gguf_tokenizer_mapping.convert_gguf_tokenizer; we read the
  metadata ourselves because transformers' GGUF reader imports torch). Two corrections so the
  reference is llama.cpp's behaviour, which is what the Rust tokenizer implements:
    * smollm: transformers' GGUF converter has no "smollm" pre-tokenizer and uses plain GPT-2
      splitting. SmolLM2's own tokenizer.json, and llama.cpp, split digits first, so we set
      Sequence[Digits(individual_digits=True), ByteLevel]. (llama.cpp wins.)
    * llama.cpp turns any token named like an end-of-turn/end-of-generation/FIM marker into a
      control token, even when the file says "normal" (Qwen2.5's "</s>", id 128247). We add
      those to HF as special tokens so they are matched whole, as llama.cpp matches them.
      (llama.cpp wins.)
    * "ids_plain" (llama.cpp parse_special=false) is encoded with encode_special_tokens=True,
      which stops HF matching special (control) tokens in the text while still matching
      user-defined ones, as llama.cpp does.
- pretok_splits.json: words from the Python `regex` module for each pre-tokenizer's regex list
  (applied the way llama.cpp applies a list), over the same corpus.
- spm.json: a tiny SentencePiece BPE model trained here (byte fallback, identity normalization,
  dummy prefix), its vocabulary as GGUF would store it, and the ids `sentencepiece` itself gives.
- chat_templates.json: the two models' chat templates plus templates exercising Hugging Face's
  Jinja conventions, rendered with transformers' own render_jinja_template (jinja2 sandbox,
  trim_blocks, lstrip_blocks, loopcontrols, tojson, raise_exception).
"""

import json
import os
import sys
import tempfile

import regex
from gguf import GGUFReader, GGUFValueType

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data")

CORPUS = [
    "",
    " ",
    "  ",
    "Once upon a time",
    "The three primary colors are",
    "Hello, world! How are you today?",
    "I'm sure you're right, they'll see it's what we'd've done. DON'T YOU'RE I'M",
    "can't won't shouldn't ain't y'all 'tis 'S 'Ll",
    "   leading and trailing spaces   ",
    "tabs\tbetween\t\twords\t",
    "line one\nline two\n\nline four\r\nwindows\r\n",
    "\n\n\n",
    " \n \n  \n",
    "numbers: 0 1 12 123 1234 12345 123456 3.14159 -42 1,000,000 2024-01-31",
    "mixed abc123def456 x2y3 v1.2.3 0x1F",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n\tprintln!(\"{}\", 1 + 2); // comment\n}\n",
    '{"key": [1, 2.5, true, null], "nested": {"a": "b"}}',
    "<html><body class=\"x\">&amp; &lt;tag&gt;</body></html>",
    "https://example.com/path?query=1&b=2#frag email@example.org",
    "你好，世界！这是一个测试。",
    "日本語のテキストとカタカナ、ひらがな。",
    "한국어 텍스트입니다.",
    "Привет, мир! Ελληνικά κείμενα.",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "café naïve résumé Zürich",
    "cafe\u0301 nai\u0308ve",
    "emoji: 🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ 🤖",
    "math: ∑ x² ≤ ∞ → ∀ε>0 ½ ①②③",
    "non\u00a0breaking\u3000ideographic\u2003em space",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|><|endoftext|>",
    "text<|endoftext|>more text",
    "<|im_start",
    "broken <|im_end| and |im_end|> pieces",
    "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
    "</s> <s> <unk>",
    "<repo_name>tuili<file_sep>main.rs",
    "a" * 50 + " " + "ab" * 30,
    "!!!??? ... --- *** ###",
    "x" + " " * 10 + "y",
    "end with spaces  ",
    "ʼapostropheʼ ‘quotes’ “double” «guillemets»",
    "\x00\x01 control \x1b[31mred\x1b[0m",
    "über ÜBER Straße",
    "$100 + €50 = £? ¥",
]

SPECIAL_SAMPLES = [
    "Once upon a time",
    "你好，世界！",
    "emoji: 🎉👍🏽 👨‍👩‍👧‍👦",
]


def read_metadata(path):
    """All `general.*` and `tokenizer.*` keys of a GGUF file as plain Python values."""
    reader = GGUFReader(path)
    out = {}
    for key, field in reader.fields.items():
        if not (key.startswith("tokenizer") or key.startswith("general")):
            continue
        t = field.types
        if t[0] == GGUFValueType.ARRAY:
            if t[-1] == GGUFValueType.STRING:
                out[key] = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                out[key] = [field.parts[i].tolist()[0] for i in field.data]
        elif t[0] == GGUFValueType.STRING:
            out[key] = bytes(field.parts[field.data[0]]).decode("utf-8")
        else:
            out[key] = field.parts[field.data[0]].tolist()[0]
    return out


# Token texts llama.cpp (src/llama-vocab.cpp, `load`) forces to control type by name.
LLAMA_CPP_CONTROL_NAMES = {
    # EOT, EOM
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<\uff5cend\u2581of\u2581sentence\uff5c>", "<end_of_utterance>",
    "<|eom_id|>",
    # FIM
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\uff5cfim\u2581begin\uff5c>", "<PRE>", "\u2581<PRE>",
    "<|code_prefix|>", "<|prefix|>",
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\uff5cfim\u2581hole\uff5c>", "<SUF>", "\u2581<SUF>",
    "<|code_suffix|>", "<|suffix|>",
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\uff5cfim\u2581end\uff5c>", "<MID>", "\u2581<MID>",
    "<|code_middle|>", "<|middle|>",
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
    # EOG
    "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "</s>", "[EOS]", "<eos>", "<turn|>",
    "<|tool_response>", "[e~[",
}


def hf_backend(meta):
    from tokenizers import AddedToken, pre_tokenizers
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    tokenizer_dict = {
        name: meta["tokenizer." + key]
        for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items()
        if "tokenizer." + key in meta
    }
    backend, _ = convert_gguf_tokenizer(meta["general.architecture"], tokenizer_dict)
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    forced = [
        AddedToken(t, special=True, normalized=False)
        for t, ty in zip(tokens, types)
        if t in LLAMA_CPP_CONTROL_NAMES and ty != 3
    ]
    if forced:
        backend.add_special_tokens(forced)
    if meta.get("tokenizer.ggml.pre") == "smollm":
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    return backend


def tokenize_fixture(models_dir, name):
    meta = read_metadata(os.path.join(models_dir, name + ".gguf"))
    backend = hf_backend(meta)
    cases = []
    for text in CORPUS:
        backend.encode_special_tokens = False
        ids_special = backend.encode(text, add_special_tokens=False).ids
        backend.encode_special_tokens = True
        ids_plain = backend.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids_special": ids_special, "ids_plain": ids_plain})
    backend.encode_special_tokens = False
    return {
        "model": name + ".gguf",
        "pre": meta.get("tokenizer.ggml.pre"),
        "source": "tokenizers " + __import__("tokenizers").__version__ + " via transformers "
        + __import__("transformers").__version__ + " GGUF conversion (see scripts/gen_fixtures.py)",
        "cases": cases,
    }


GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# llama.cpp's form of the o200k regex (gpt-oss, Llama 4): case runs by lookahead over
# \p{L}, since llama.cpp matches \p{..} on a collapsed copy of the text.
GPT4O = (
    r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+"
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
    r"|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*"
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_LISTS = {
    "gpt-2": [GPT2],
    "llama-bpe": [LLAMA3],
    "qwen2": [QWEN2],
    "smollm": [r"\p{N}", GPT2],
    "gpt-4o": [GPT4O],
}

# Extra texts for the splits only: case changes inside words (the o200k regex cuts there).
PRETOK_TEXTS = [
    "HelloWorld camelCase XMLHttpRequest getHTTPResponse ABCdef abcDEF",
    "ÉcoleNormale naïveÉtude ÀBC àbc ΑθήναΚαι ПриветМир",
    "DON'T You'RE i'M x/y/z a//b path/to/file\r\n",
]


def split_words(patterns, text):
    """Apply a regex list like llama.cpp: each regex cuts each piece into matches and gaps."""
    pieces = [text] if text else []
    for pattern in patterns:
        rx = regex.compile(pattern)
        nxt = []
        for piece in pieces:
            done = 0
            for m in rx.finditer(piece):
                if m.start() > done:
                    nxt.append(piece[done : m.start()])
                if m.end() > m.start():
                    nxt.append(m.group())
                done = m.end()
            if done < len(piece):
                nxt.append(piece[done:])
        pieces = nxt
    return pieces


def pretok_fixture():
    # The hand-written splitters treat white space as Unicode White_Space; Python's `regex`
    # \s agrees except for U+001C..U+001F, which the corpus avoids.
    return {
        "source": "python regex " + regex.__version__,
        "cases": [
            {"pre": pre, "text": text, "words": split_words(patterns, text)}
            for pre, patterns in PRE_LISTS.items()
            for text in CORPUS + PRETOK_TEXTS
        ],
    }


SPM_TRAIN = """\
The quick brown fox jumps over the lazy dog. A tokenizer splits text into pieces.
SentencePiece treats the input as a raw stream and encodes spaces as a meta symbol.
Byte fallback turns characters outside the vocabulary into byte tokens.
Once upon a time there was a small model that learned to read and to write.
Numbers like 2024 and 3.14 appear, as do names like Alice, Bob and Carol.
"""

SPM_CASES = [
    "Hello world",
    "The quick brown fox",
    " leading space",
    "double  space and trailing ",
    "Once upon a time",
    "unseen: 你好 🎉 é",
    "tokenizer tokens token",
    "a",
    "",
]


def spm_fixture():
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write(SPM_TRAIN * 20)
        prefix = os.path.join(tmp, "m")
        spm.SentencePieceTrainer.train(
            input=corpus,
            model_prefix=prefix,
            model_type="bpe",
            vocab_size=400,
            byte_fallback=True,
            normalization_rule_name="identity",
            add_dummy_prefix=True,
            remove_extra_whitespaces=False,
            split_digits=False,
            user_defined_symbols=["<tool>"],
            character_coverage=1.0,
            minloglevel=2,
        )
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        # GGUF token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        elif sp.is_unused(i):
            types.append(5)
        elif tokens[-1] == "<tool>":
            types.append(4)
        else:
            types.append(1)
    return {
        "source": "sentencepiece " + spm.__version__,
        "tokens": tokens,
        "scores": scores,
        "token_types": types,
        "bos": sp.bos_id(),
        "eos": sp.eos_id(),
        "unk": sp.unk_id(),
        "cases": [{"text": t, "ids": sp.encode(t)} for t in SPM_CASES],
    }


CONVERSATIONS = {
    "system_user_assistant": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ],
    "multi_turn": [
        {"role": "system", "content": "Be helpful."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke about \"quotes\" & <tags>."},
        {"role": "assistant", "content": "Why did the string escape? It had issues.\n"},
        {"role": "user", "content": "Another, in 中文 🎉"},
    ],
    "no_system": [{"role": "user", "content": "Write a haiku about rust."}],
    "single_user_whitespace": [{"role": "user", "content": "  spaced\n\tcontent  "}],
    "empty": [],
}

# Templates exercising transformers' Jinja conventions.
EXTRA_TEMPLATES = {
    "tojson": (
        "{% for m in messages %}{{ m | tojson }}\n{{ m | tojson(indent=2) }}\n"
        "{{ {'n': 1, 'f': 0.5, 'big': 1e20, 'small': 0.00001, 'b': true, 'z': none, 'l': [1, [2, []], {}],"
        " 's': 'é\"\\\\</script>\\u0001'} | tojson }}\n"
        "{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}{{ [1, 2] | tojson(separators=(',', ':')) }}"
        "{{ 'é' | tojson(ensure_ascii=true) }}\n{% endfor %}"
    ),
    "python_methods": (
        "{% for m in messages %}"
        "{{ m.content.strip() }}|{{ m.content.upper() }}|{{ m.content.split() | join(',') }}|"
        "{{ m.role.startswith('us') }}|{{ m.content.replace(' ', '_') }}|{{ m.content.lstrip() }}|"
        "{{ m.content.title() }}|{{ m.content.endswith('  ') }}"
        "{% for k, v in m.items() %} {{ k }}={{ v | length }}{% endfor %}\n"
        "{% endfor %}"
    ),
    "loop_controls": (
        "{% for m in messages %}{% if loop.index0 == 3 %}{% break %}{% endif %}"
        "{% if m.role == 'system' %}{% continue %}{% endif %}"
        "[{{ loop.index }}/{{ loop.length }}{% if loop.first %} first{% endif %}{% if loop.last %} last{% endif %}]"
        "{{ m.content }}\n{% endfor %}"
    ),
    "whitespace_control": (
        "{{ bos_token }}\n"
        "{% for message in messages %}\n"
        "    {% if message['role'] == 'user' %}\n"
        "        User: {{ message['content'] }}\n"
        "    {% else %}\n"
        "        {{- message['role'] | capitalize }}: {{ message['content'] -}}\n"
        "    {% endif %}\n"
        "{% endfor %}\n"
        "{% if add_generation_prompt %}\n"
        "Assistant:{% endif %}{{ eos_token }}\n"
    ),
    "namespace_and_set": (
        "{% set ns = namespace(count=0, sys='') %}"
        "{% for m in messages %}{% if m.role == 'system' %}{% set ns.sys = m.content %}"
        "{% else %}{% set ns.count = ns.count + 1 %}{% endif %}{% endfor %}"
        "system={{ ns.sys }} others={{ ns.count }} last={{ (messages | last).role if messages else 'none' }}"
        "{% if tools is none %} no-tools{% endif %}{% if documents is defined %} docs-defined{% endif %}"
        "{% generation %} gen{% endgeneration %}"
    ),
    "raise_on_assistant_first": (
        "{% if messages and messages[0]['role'] == 'assistant' %}"
        "{{ raise_exception('Conversation must not start with assistant') }}{% endif %}"
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    ),
}

EXTRA_CONVERSATIONS = dict(
    CONVERSATIONS,
    assistant_first=[{"role": "assistant", "content": "I speak first."}],
)


def chat_fixture(models_dir):
    from transformers.utils.chat_template_utils import render_jinja_template

    templates = {}
    for name in ("smol", "qwen"):
        meta = read_metadata(os.path.join(models_dir, name + ".gguf"))
        toks = meta["tokenizer.ggml.tokens"]
        bos = meta.get("tokenizer.ggml.bos_token_id")
        eos = meta.get("tokenizer.ggml.eos_token_id")
        templates[name] = {
            "source": meta["tokenizer.chat_template"],
            "bos": toks[bos] if bos is not None else "",
            "eos": toks[eos] if eos is not None else "",
            "conversations": list(CONVERSATIONS),
        }
    for name, source in EXTRA_TEMPLATES.items():
        templates[name] = {
            "source": source,
            "bos": "<s>",
            "eos": "</s>",
            "conversations": list(EXTRA_CONVERSATIONS),
        }
    cases = []
    for name, t in templates.items():
        for conv in t["conversations"]:
            for gen in (False, True):
                case = {"template": name, "conversation": conv, "add_generation_prompt": gen}
                try:
                    rendered, _ = render_jinja_template(
                        conversations=[EXTRA_CONVERSATIONS[conv]],
                        chat_template=t["source"],
                        add_generation_prompt=gen,
                        bos_token=t["bos"],
                        eos_token=t["eos"],
                    )
                    case["expected"] = rendered[0]
                except Exception as e:  # raise_exception and friends
                    case["error"] = str(e)
                    # TemplateError itself comes from raise_exception; its text must match.
                    case["error_type"] = type(e).__name__
                cases.append(case)
    return {
        "source": "transformers " + __import__("transformers").__version__ + " render_jinja_template, jinja2 "
        + __import__("jinja2").__version__,
        "templates": {k: {kk: vv for kk, vv in v.items() if kk != "conversations"} for k, v in templates.items()},
        "conversations": EXTRA_CONVERSATIONS,
        "cases": cases,
    }


def write(name, data):
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", os.path.normpath(path))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    models_dir = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)
    write("tokenize_smol.json", tokenize_fixture(models_dir, "smol"))
    write("tokenize_qwen.json", tokenize_fixture(models_dir, "qwen"))
    write("pretok_splits.json", pretok_fixture())
    write("spm.json", spm_fixture())
    write("chat_templates.json", chat_fixture(models_dir))


if __name__ == "__main__":
    main()
