"""Structured output with the official `openai` client: JSON-schema answers (nested objects,
arrays, enums, anyOf, bounded numbers, string patterns) must parse and validate with
`jsonschema`, streaming and not; vLLM's `structured_outputs` forms constrain the text.
Runs on every model run.sh serves.
"""

import json
import os

import jsonschema
import openai
import pytest

BASE_URL = os.environ["TUILI_BASE_URL"]
API_KEY = os.environ["TUILI_API_KEY_TEST"]
MODEL = os.environ.get("TUILI_MODEL", "smol")

SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 24},
                               "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["city", "zip"],
                "additionalProperties": False,
            },
        },
        "required": ["name", "age", "address"],
        "additionalProperties": False,
    },
    "order": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array", "minItems": 1, "maxItems": 3,
                "items": {"type": "object",
                          "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
                                         "qty": {"type": "integer", "minimum": 1, "maximum": 9}},
                          "required": ["sku", "qty"], "additionalProperties": False},
            },
            "status": {"enum": ["new", "paid", "shipped"]},
            "total": {"type": "number", "minimum": 0, "maximum": 1000},
        },
        "required": ["items", "status", "total"],
        "additionalProperties": False,
    },
    "shape": {
        "type": "object",
        "properties": {
            "shape": {"anyOf": [
                {"type": "object", "properties": {"kind": {"const": "circle"},
                                                  "radius": {"type": "number", "exclusiveMinimum": 0, "maximum": 50}},
                 "required": ["kind", "radius"], "additionalProperties": False},
                {"type": "object", "properties": {"kind": {"const": "square"},
                                                  "side": {"type": "integer", "minimum": 1, "maximum": 50}},
                 "required": ["kind", "side"], "additionalProperties": False},
            ]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
            "visible": {"type": "boolean"},
        },
        "required": ["shape", "tags", "visible"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=300)


def ask_json(client, name, schema, stream, **kw):
    """One answer under `schema` via response_format; returns (text, finish_reason)."""
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": f"Give me an example {name} as JSON."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": name, "schema": schema, "strict": True}},
        max_tokens=200, stream=stream, **kw)
    if not stream:
        return r.choices[0].message.content, r.choices[0].finish_reason
    text, finish = "", None
    for chunk in r:
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    return text, finish


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_answers_validate(client, name, stream):
    schema = SCHEMAS[name]
    text, finish = ask_json(client, name, schema, stream, temperature=0.7, seed=len(name))
    assert finish == "stop", text
    jsonschema.validate(json.loads(text), schema)


def test_json_object_and_n(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "A JSON object describing a cat with a name and an age."}],
        response_format={"type": "json_object"}, n=2, seed=3, temperature=0.3, max_tokens=160)
    for c in r.choices:
        assert c.finish_reason == "stop", c.message.content
        assert isinstance(json.loads(c.message.content), dict)


def test_vllm_structured_outputs(client):
    cases = [
        ({"choice": ["positive", "negative"]}, lambda t: t in ("positive", "negative")),
        ({"regex": "[0-9]{3}-[0-9]{4}"}, lambda t: len(t) == 8 and t[3] == "-" and t.replace("-", "").isdigit()),
        ({"grammar": 'start: "yes" | "no"'}, lambda t: t in ("yes", "no")),
    ]
    for form, ok in cases:
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Answer."}], max_tokens=20,
            temperature=0, extra_body={"structured_outputs": form})
        assert ok(r.choices[0].message.content), (form, r.choices[0].message.content)


def test_logprobs_follow_the_grammar(client):
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Pick a colour."}], max_tokens=10,
        temperature=0, logprobs=True, top_logprobs=5,
        extra_body={"structured_outputs": {"choice": ["red", "blue"]}})
    content = r.choices[0].logprobs.content
    # Every alternative the first step shows starts one of the choices.
    for alt in content[0].top_logprobs:
        assert "red".startswith(alt.token) or "blue".startswith(alt.token), alt.token


def test_bad_schema_is_400_naming_the_field(client):
    with pytest.raises(openai.BadRequestError) as e:
        ask_json(client, "bad", {"type": "object", "properties": {"a": {"type": "nope"}}}, False)
    assert "response_format.json_schema.schema" in str(e.value)
