#!/usr/bin/env python3
"""Generate the Gemma 3 fixtures in crates/tuili-tokenizer/tests/data/.

Two parts, each run with the Python that has its library:

    # token ids and detokenized text from llama.cpp itself (llama-cpp-python 0.3.36, the
    # build bench/vs-llamacpp.sh --install-only makes in ~/.cache/tuili/llamacpp-venv)
    ~/.cache/tuili/llamacpp-venv/bin/python gen_gemma_fixtures.py tokens MODELS_DIR/gemma.gguf

    # random texts through llama.cpp and `tuili tokenize --ids`, compared (prints mismatches;
    # llama.cpp's double-BOS warnings go to stderr). Last run: 500/500 equal, 2.5 minutes.
    ~/.cache/tuili/llamacpp-venv/bin/python gen_gemma_fixtures.py fuzz MODELS_DIR/gemma.gguf \
        target/release/tuili 500

    # the Gemma 3 chat template rendered by transformers (pip install transformers==5.23.0
    # jinja2==3.1.6 in a venv; no torch needed)
    VENV/bin/python gen_gemma_fixtures.py chat

- tokenize_gemma.json: for every corpus text (gen_fixtures.py's CORPUS plus Gemma's own
  special tokens, whitespace runs, code, CJK, emoji, byte-fallback characters), llama.cpp's
  ids with parse_special on and off (no BOS) and with BOS added, and llama.cpp's
  detokenization of the special-parsed ids (llama_detokenize, special tokens shown). Unlike
  the SmolLM2/Qwen fixtures the truth here is llama.cpp, not Hugging Face `tokenizers`: the
  GGUF's SentencePiece vocabulary is what llama.cpp tokenizes with, and there is no
  tokenizer.json to compare with offline. Also the ids of the whole GPL-3 text
  (/usr/share/common-licenses/GPL-3) with BOS, as llama-perplexity tokenizes it.
- chat_gemma3.json: the Gemma 3 instruction template (the file ships none: its
  tokenizer.chat_template key is absent), rendered for a system + user + assistant + user
  conversation with and without add_generation_prompt, by transformers'
  render_jinja_template. The template text is the `chat_template` of Google's
  gemma-3-*-it tokenizer_config.json (the model hub is out of reach; copied verbatim from a
  public copy of that file).
"""

import ast
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data")
GPL3 = "/usr/share/common-licenses/GPL-3"


def shared_corpus():
    """gen_fixtures.py's CORPUS, read without importing it (its imports need other packages)."""
    src = open(os.path.join(HERE, "gen_fixtures.py"), encoding="utf-8").read()
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "CORPUS":
            return eval(compile(ast.Expression(node.value), "gen_fixtures.py", "eval"))
    raise SystemExit("no CORPUS in gen_fixtures.py")


GEMMA_CORPUS = [
    # Gemma's control and user-defined tokens, whole, broken and adjacent.
    "<start_of_turn>user\nWrite a poem about the sea.<end_of_turn>\n<start_of_turn>model\n",
    "<bos><eos><pad><unk><mask>[multimodal]<start_of_image><end_of_image><unused0><unused6241>",
    "<start_of_turn <end_of_turn> start_of_turn> <start_of_turn><start_of_turn>",
    "text<start_of_turn>model\n  spaced after a control token",
    "a[multimodal]b <start_of_image>c",
    # Whitespace runs: Gemma has user-defined tokens for runs of newlines and tabs, and
    # normal tokens for runs of spaces.
    "a\n\n\n\n\n\nb",
    "\n" * 31 + "x" + "\n" * 40,
    "\t\t\t\tindented\n\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\tdeep",
    " " * 31 + "|" + " " * 32 + "|" + " " * 80 + "|",
    "x\t \t \n \n\ty \r\n\r\n\r z",
    "trailing\n\n\n",
    "  \n\n  \t\t  ",
    "\u2581literal lower one eighth block\u2581\u2581 and  spaces",
    # Code.
    "import numpy as np\n\n\nclass A:\n    def f(self, x):\n        return np.sum(x ** 2)  # sq\n",
    "#include <stdio.h>\nint main(void) {\n\tfor (int i = 0; i < 10; i++) {\n\t\tprintf(\"%d\\n\", i);\n\t}\n\treturn 0;\n}\n",
    "fn main() -> Result<(), Box<dyn std::error::Error>> {\n    let v: Vec<u8> = vec![0xFF; 16];\n    Ok(())\n}\n",
    "<table><tr><td>cell</td></tr></table><br/><div class='x'>&nbsp;</div>",
    # CJK, emoji, rare characters that fall back to bytes.
    "自然语言处理是人工智能的一个重要分支。它研究人与计算机之间用自然语言进行有效通信的理论和方法。",
    "中文、日本語、한국어 mixed with English and 数字 123。",
    "🧑‍💻👩🏾‍🚀🏳️‍🌈🫠🫨 🦀🐍 \U0001fabf\U0001faef",
    "rare: \U00020000\U0002a6a5\U0003134a \ue000\U000f0000 \u0378\ufffe",
    "<0x41><0x0A> written out, and \\x00 escaped",
    "\x00\x07\x1f\x7f\u0085\u2028\u2029",
    "Ünïcödé ﬁ ligature ＦＵＬＬＷＩＤＴＨ ｶﾀｶﾅ ①",
]


def tokens(model_path):
    import ctypes

    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(model_path=model_path, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)

    def detok(ids):
        arr = (llama_cpp.llama_token * len(ids))(*ids)
        cap = 16 * len(ids) + 16
        for _ in range(2):
            buf = ctypes.create_string_buffer(cap)
            # remove_special=False, unparse_special=True: every token's text, specials shown.
            n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, cap, False, True)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            cap = -n  # too small: -n is the size needed
        raise RuntimeError("llama_detokenize")

    cases = []
    for text in shared_corpus() + GEMMA_CORPUS:
        b = text.encode("utf-8")
        ids_special = llm.tokenize(b, add_bos=False, special=True)
        cases.append(
            {
                "text": text,
                "ids_special": ids_special,
                "ids_plain": llm.tokenize(b, add_bos=False, special=False),
                "ids_bos": llm.tokenize(b, add_bos=True, special=False),
                "detok": detok(ids_special),
            }
        )
    gpl = open(GPL3, "rb").read()
    gpl_ids = llm.tokenize(gpl, add_bos=True, special=False)
    # GPL-3 holds no control-token text, so parse_special changes nothing (tuili tokenize
    # parses specials, tuili perplexity does not).
    assert gpl_ids == llm.tokenize(gpl, add_bos=True, special=True)
    return {
        "model": "gemma.gguf",
        "source": f"llama.cpp via llama-cpp-python {llama_cpp.__version__} "
        "(Llama(vocab_only=True).tokenize, llama_detokenize); see scripts/gen_gemma_fixtures.py",
        "cases": cases,
        "gpl3": {
            "path": GPL3,
            "sha256": hashlib.sha256(gpl).hexdigest(),
            "ids": gpl_ids,
        },
    }


def random_text(rng):
    """A text mixing what SentencePiece tokenizers trip on: runs of white space, CJK, emoji,
    random code points (byte fallback), control-token texts and `▁`."""
    specials = ["<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "[multimodal]",
                "<start_of_image>", "<unused7>", "<mask>", "<start_of", "\u2581", "<0x41>"]
    words = ["the", "The", " of", "tokenizer", "Once", "upon", "def", "return", "{}", "();",
             "http://", "1234567", "3.14", "naïve", "Straße"]
    parts = []
    for _ in range(rng.randint(1, 24)):
        k = rng.random()
        if k < 0.25:
            parts.append(rng.choice(words))
        elif k < 0.45:
            parts.append(rng.choice([" ", "\t", "\n", "\r\n", "\u3000"]) * rng.randint(1, 40))
        elif k < 0.55:
            parts.append("".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(rng.randint(1, 6))))
        elif k < 0.62:
            parts.append(chr(rng.randint(0x1F300, 0x1FAFF)) + rng.choice(["", "\u200d", "\ufe0f", "\U0001F3FD"]))
        elif k < 0.75:
            # any scalar value but NUL (argv cannot carry it) and the surrogates
            c = rng.choice([rng.randint(1, 0x7F), rng.randint(0x80, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])
            parts.append(chr(c))
        elif k < 0.85:
            parts.append(rng.choice(specials))
        else:
            parts.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz.,;:!?'\"-_()[]<>/\\|") for _ in range(rng.randint(1, 12))))
    return "".join(parts)


def fuzz(model_path, tuili, n):
    import random
    import subprocess

    from llama_cpp import Llama

    llm = Llama(model_path=model_path, vocab_only=True, verbose=False)
    rng = random.Random(20261206)
    bad = 0
    for i in range(n):
        text = random_text(rng)
        want = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        # `--prompt=`: a text may start with `-`
        out = subprocess.run([tuili, "tokenize", "-m", model_path, "--ids", "--prompt=" + text],
                             capture_output=True, text=True, env=dict(os.environ, TUILI_QUIET="1"))
        if out.returncode != 0:
            raise SystemExit(f"tuili failed on {text!r}: {out.stderr}")
        got = json.loads(out.stdout)
        if got != want:
            bad += 1
            print(f"MISMATCH {text!r}\n  tuili     {got}\n  llama.cpp {want}")
    print(f"{n - bad}/{n} random texts give llama.cpp's ids")
    return bad


# The chat_template of google/gemma-3-*-it (tokenizer_config.json), verbatim.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n        {%- endfor -%}\n    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n"
)

CHAT_CONVERSATIONS = {
    "system_user_assistant_user": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris.\n"},
        {"role": "user", "content": "  And of 中国? 🎉  "},
    ],
    "user_only": [{"role": "user", "content": "Write a haiku about rust."}],
    "not_alternating": [
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"},
    ],
}


def chat():
    import jinja2
    import transformers
    from transformers.utils.chat_template_utils import render_jinja_template

    cases = []
    for conv, messages in CHAT_CONVERSATIONS.items():
        for gen in (False, True):
            case = {"conversation": conv, "add_generation_prompt": gen}
            try:
                rendered, _ = render_jinja_template(
                    conversations=[messages],
                    chat_template=GEMMA3_TEMPLATE,
                    add_generation_prompt=gen,
                    bos_token="<bos>",
                    eos_token="<eos>",
                )
                case["expected"] = rendered[0]
            except Exception as e:  # raise_exception
                case["error"] = str(e)
                case["error_type"] = type(e).__name__
            cases.append(case)
    return {
        "source": f"transformers {transformers.__version__} render_jinja_template, jinja2 {jinja2.__version__}",
        "template": GEMMA3_TEMPLATE,
        "bos": "<bos>",
        "eos": "<eos>",
        "conversations": CHAT_CONVERSATIONS,
        "cases": cases,
    }


def write(name, data, indent=1):
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=indent)
        f.write("\n")
    print("wrote", os.path.normpath(path))


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "tokens" and len(sys.argv) == 3:
        data = tokens(sys.argv[2])
        # The GPL-3 ids on one line: thousands of them.
        gpl_ids = data["gpl3"].pop("ids")
        text = json.dumps(data, ensure_ascii=False, indent=1)
        assert text.endswith("\n }\n}")
        text = text[: -len("\n }\n}")] + ',\n  "ids": ' + json.dumps(gpl_ids) + "\n }\n}\n"
        path = os.path.join(OUT, "tokenize_gemma.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        json.load(open(path, encoding="utf-8"))
        print("wrote", os.path.normpath(path))
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "fuzz":
        n = int(sys.argv[4]) if len(sys.argv) == 5 else 300
        sys.exit(1 if fuzz(sys.argv[2], sys.argv[3], n) else 0)
    elif sys.argv[1:] == ["chat"]:
        write("chat_gemma3.json", chat())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
