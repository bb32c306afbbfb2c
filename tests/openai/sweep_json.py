#!/usr/bin/env python3
"""100 JSON-schema requests with varied schemas against a running `tuili serve`, with the
official `openai` client; every answer must parse and validate with `jsonschema`. Run by
hand (too slow for CI on 2 cores):

    TUILI_BASE_URL=http://127.0.0.1:8080/v1 TUILI_MODEL=smol python tests/openai/sweep_json.py

Schemas are drawn (seeded) from nested objects, arrays, enums, anyOf, bounded numbers and
string patterns; even requests stream, odd ones do not. Prints the counts; exits 1 on any
answer that does not validate or is cut by max_tokens.
"""

import json
import os
import random
import sys

import jsonschema
import openai

LEAVES = [
    lambda r: {"type": "integer", "minimum": r.randint(-50, 0), "maximum": r.randint(1, 500)},
    lambda r: {"type": "number", "minimum": 0, "maximum": r.choice([1, 10, 1000])},
    lambda r: {"type": "boolean"},
    lambda r: {"enum": r.sample(["red", "green", "blue", "cyan", "black"], r.randint(2, 4))},
    lambda r: {"type": "string", "maxLength": r.randint(3, 30)},
    lambda r: {"type": "string", "pattern": r.choice(["^[A-Z]{2}[0-9]{3}$", "^[a-z]+@[a-z]+\\.com$",
                                                      "^\\+?[0-9]{6,10}$", "^(yes|no)$"])},
    lambda r: {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9},
                         {"type": "string", "maxLength": 8}]},
]


def schema(r, depth=0):
    kind = r.random()
    if depth < 2 and kind < 0.3:
        return {"type": "array", "items": schema(r, depth + 1), "minItems": 1,
                "maxItems": r.randint(1, 4)}
    if depth < 2 and kind < 0.6:
        keys = r.sample(["id", "name", "size", "color", "code", "tags", "owner", "score"],
                        r.randint(1, 4))
        props = {k: schema(r, depth + 1) for k in keys}
        return {"type": "object", "properties": props, "required": keys,
                "additionalProperties": False}
    return r.choice(LEAVES)(r)


def main():
    client = openai.OpenAI(base_url=os.environ["TUILI_BASE_URL"],
                           api_key=os.environ.get("TUILI_API_KEY_TEST", "none"),
                           max_retries=0, timeout=600)
    model = os.environ.get("TUILI_MODEL", "smol")
    n = int(os.environ.get("SWEEP_N", "100"))
    r = random.Random(int(os.environ.get("SWEEP_SEED", "18")))
    counts = {"valid": 0, "invalid": 0, "truncated": 0}
    for i in range(n):
        s = {"type": "object", "properties": {"answer": schema(r)}, "required": ["answer"],
             "additionalProperties": False}
        stream = i % 2 == 0
        resp = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"Example {i}: fill in the JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": s}},
            max_tokens=400, temperature=0.7, seed=i, stream=stream)
        if stream:
            text, finish = "", None
            for chunk in resp:
                for c in chunk.choices:
                    text += c.delta.content or ""
                    finish = c.finish_reason or finish
        else:
            text, finish = resp.choices[0].message.content, resp.choices[0].finish_reason
        if finish != "stop":
            counts["truncated"] += 1
            print(f"{i}: finished by {finish}: {text[:120]!r}")
            continue
        try:
            jsonschema.validate(json.loads(text), s)
            counts["valid"] += 1
        except (ValueError, jsonschema.ValidationError) as e:
            counts["invalid"] += 1
            print(f"{i}: INVALID ({e.__class__.__name__}): {text[:200]!r}\n  schema {json.dumps(s)}")
    print(f"{model}: {n} requests: {counts['valid']} valid, {counts['invalid']} invalid, "
          f"{counts['truncated']} cut by max_tokens")
    sys.exit(1 if counts["invalid"] or counts["truncated"] else 0)


if __name__ == "__main__":
    main()
