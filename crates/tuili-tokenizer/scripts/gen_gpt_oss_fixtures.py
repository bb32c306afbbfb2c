#!/usr/bin/env python3
"""Generate tests/data/chat_gpt_oss.json: gpt-oss's chat template (OpenAI's harmony format)
rendered by transformers, the truth tuili's template engine must reproduce.

    VENV/bin/python gen_gpt_oss_fixtures.py TEMPLATE.jinja
    # VENV: pip install transformers==5.23.0 jinja2==3.1.6 (no torch needed)
    # TEMPLATE: models/templates/openai-gpt-oss-120b.jinja of the llama.cpp inside the
    # llama-cpp-python 0.3.36 sdist (the template the gpt-oss GGUF files carry)

The template writes the current date (`strftime_now`); the fixture holds `DATE` in its
place, and the test puts it there in tuili's output too.
"""
import datetime
import json
import os
import sys

from transformers.utils.chat_template_utils import render_jinja_template

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data", "chat_gpt_oss.json")

CONVERSATIONS = {
    "user_only": [{"role": "user", "content": "What is 2 + 2?"}],
    "system_user": [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hello!"},
    ],
    "multi_turn": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another, with \"quotes\" and 你好 🎉?"},
    ],
}


def main(path):
    source = open(path, encoding="utf-8").read()
    today = datetime.date.today().strftime("%Y-%m-%d")
    cases = []
    for name, messages in CONVERSATIONS.items():
        for gen in (False, True):
            rendered, _ = render_jinja_template(
                conversations=[messages], chat_template=source, add_generation_prompt=gen
            )
            text = rendered[0].replace("Current date: " + today, "Current date: DATE")
            assert "DATE" in text
            cases.append({"conversation": name, "add_generation_prompt": gen, "expected": text})
    import transformers

    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(
            {
                "source": "transformers " + transformers.__version__ + " render_jinja_template",
                "template": source,
                "conversations": CONVERSATIONS,
                "cases": cases,
            },
            f,
            ensure_ascii=False,
            indent=1,
        )
        f.write("\n")
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
