"""`/v1/embeddings` with the official `openai` client: mean-pooled, normalized final hidden
states, held to llama.cpp's embeddings (llama-cpp-python, `pooling_type` mean) at cosine
>= 0.999 (the test models' files name no pooling_type: tuili's default, mean); base64 and
float agree; token-id input equals text input; bad requests, and a pooling tuili cannot make
a sentence vector with, are 400s.
"""

import base64
import json
import os
import struct
import subprocess

import openai
import pytest

BASE_URL = os.environ["TUILI_BASE_URL"]
API_KEY = os.environ["TUILI_API_KEY_TEST"]
MODEL = os.environ.get("TUILI_MODEL", "smol")
MODEL_FILE = os.environ.get("TUILI_MODEL_FILE", "")
LLAMACPP_PYTHON = os.environ.get("TUILI_LLAMACPP_PYTHON") or os.path.expanduser(
    "~/.cache/tuili/llamacpp-venv/bin/python")
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Embeddings turn text into vectors.",
         "def add(a, b):\n    return a + b\n"]

REFERENCE = r"""
import json, sys, llama_cpp
m = llama_cpp.Llama(sys.argv[1], embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                    n_ctx=512, verbose=False)
print(json.dumps([m.embed(t, normalize=True) for t in json.loads(sys.argv[2])]))
"""


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=300)


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)


def test_matches_llama_cpp(client):
    r = client.embeddings.create(model=MODEL, input=TEXTS)
    assert [d.index for d in r.data] == [0, 1, 2] and r.usage.prompt_tokens > 20
    for d in r.data:
        assert abs(sum(x * x for x in d.embedding) - 1) < 1e-4
    ok = subprocess.run([LLAMACPP_PYTHON, "-c", "import llama_cpp"], capture_output=True).returncode == 0 \
        if os.path.exists(LLAMACPP_PYTHON) else False
    if not ok or not MODEL_FILE:
        if os.environ.get("TUILI_REQUIRE_LLAMACPP", "0") not in ("", "0"):
            pytest.fail(f"llama-cpp-python required but not importable from {LLAMACPP_PYTHON}")
        pytest.skip(f"skipped: llama-cpp-python not importable from {LLAMACPP_PYTHON}")
    out = subprocess.run([LLAMACPP_PYTHON, "-c", REFERENCE, MODEL_FILE, json.dumps(TEXTS)],
                         capture_output=True, text=True, check=True)
    for d, want in zip(r.data, json.loads(out.stdout)):
        c = cosine(d.embedding, want)
        print(f"text {d.index}: cosine {c:.6f}")
        assert c >= 0.999, c


def test_base64_tokens_and_float_agree(client):
    f = client.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float").data[0].embedding
    raw = client.with_raw_response.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="base64")
    b64 = json.loads(raw.text)["data"][0]["embedding"]
    decoded = struct.unpack(f"<{len(f)}f", base64.b64decode(b64))
    assert list(decoded) == f
    ids = client.post(BASE_URL.removesuffix("/v1") + "/tokenize", cast_to=object,
                      body={"content": TEXTS[0], "add_special": True})["tokens"]
    t = client.embeddings.create(model=MODEL, input=ids).data[0].embedding
    assert t == f


def test_bad_requests(client):
    for kw, param in [(dict(input=[]), "input"), (dict(input=TEXTS[0], dimensions=8), "dimensions"),
                      (dict(input=[[10**9]]), "input[0]"), (dict(input=TEXTS[0], encoding_format="int8"),
                                                          "encoding_format")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.embeddings.create(model=MODEL, **kw)
        assert e.value.body["param"].startswith(param), (kw, e.value.body)
    for bad in ["bogus", "none"]:
        with pytest.raises(openai.BadRequestError) as e:
            client.embeddings.create(model=MODEL, input=TEXTS[0], extra_body={"pooling": bad})
        assert e.value.body["param"] == "pooling", e.value.body
