#!/usr/bin/env python3
"""Write tests/data/mistral_v11_templates.json: the chat templates of two Mistral tekken
v11+ models, the tool-call form `[TOOL_CALLS]NAME[ARGS]{...}` their GGUFs carry.

    python3 gen_mistral_templates.py LLAMA_CPP_SOURCE
    # LLAMA_CPP_SOURCE: a llama.cpp checkout; its models/templates/ holds the models'
    # templates as published with them (Ministral 3 writes `NAME[ARGS]`, Mistral Small 3.2
    # `NAME[CALL_ID]ID[ARGS]`).
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data", "mistral_v11_templates.json")
FILES = {
    "ministral3": "mistralai-Ministral-3-14B-Reasoning-2512.jinja",
    "mistral_small_3_2": "Mistral-Small-3.2-24B-Instruct-2506.jinja",
}


def main(root):
    out = {"source": "llama.cpp models/templates/"}
    for key, name in FILES.items():
        with open(os.path.join(root, "models", "templates", name), encoding="utf-8") as f:
            out[key] = f.read()
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
