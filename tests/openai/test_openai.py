"""The official `openai` client against a running `tuili serve` (started by run.sh).

Environment: TUILI_BASE_URL (…/v1), TUILI_API_KEY_TEST, TUILI_MODEL.
"""

import os
import threading

import openai
import pytest

BASE_URL = os.environ["TUILI_BASE_URL"]
API_KEY = os.environ["TUILI_API_KEY_TEST"]
MODEL = os.environ.get("TUILI_MODEL", "smol")


@pytest.fixture(scope="module")
def client():
    # No retries: a 429 or 400 must reach the test, not be retried away.
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=120)


def chat(client, content, **kw):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **kw
    )


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids


def test_chat_completion(client):
    r = chat(client, "What is the capital of France?", max_tokens=16, temperature=0)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == MODEL
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert c.message.content
    assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_system_and_multi_turn(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": [{"type": "text", "text": "Say yes."}]},
        ],
        max_completion_tokens=8,
        temperature=0,
    )
    assert r.choices[0].message.content
    assert r.usage.completion_tokens <= 8


def test_chat_stream_equals_non_stream(client):
    kw = dict(max_tokens=24, temperature=0)
    whole = chat(client, "Name three fruits.", **kw)
    stream = chat(
        client, "Name three fruits.", stream=True, stream_options={"include_usage": True}, **kw
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            assert chunk.choices == []
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_completions_stream_and_not(client):
    kw = dict(model=MODEL, prompt="The quick brown fox", max_tokens=12, temperature=0)
    whole = client.completions.create(**kw)
    assert whole.object == "text_completion"
    assert whole.choices[0].text
    text = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw) if c.choices)
    assert text == whole.choices[0].text


def test_stop_sequence(client):
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=40, temperature=0,
              extra_body={"ignore_eos": True})
    full = client.completions.create(**kw).choices[0].text
    assert len(full) > 20
    mid = len(full) // 2
    stop = full[mid:mid + 3]
    expected = full[: full.index(stop)]
    r = client.completions.create(stop=[stop, "zzzz-never"], **kw)
    assert r.choices[0].text == expected
    assert r.choices[0].finish_reason == "stop"
    streamed = "".join(
        c.choices[0].text for c in client.completions.create(stop=stop, stream=True, **kw) if c.choices
    )
    assert streamed == expected


def test_chat_logprobs(client):
    r = chat(client, "Say hello.", max_tokens=6, temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for t in content:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 2
        assert t.top_logprobs[0].token == t.token
    assert "".join(t.token for t in content) == r.choices[0].message.content


def test_completion_logprobs(client):
    r = client.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=5, temperature=0,
                                  logprobs=3, extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert all(len(t) <= 3 for t in lp.top_logprobs)
    assert lp.text_offset[0] == 0


def test_n_and_seed(client):
    kw = dict(model=MODEL, prompt="My favourite animal is", max_tokens=8, temperature=1.0,
              seed=11, n=3, extra_body={"ignore_eos": True})
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert a.usage.completion_tokens == 24


def test_extra_sampling_fields(client):
    r = chat(client, "Tell me a joke.", max_tokens=20, temperature=0.7, seed=1,
             extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1, "ignore_eos": True})
    assert r.usage.completion_tokens == 20
    assert r.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(temperature=5), "temperature must be between 0 and 2, got 5"),
        (dict(top_p=2), "top_p must be between 0 and 1, got 2"),
        (dict(n=0), "n must be between 1 and 16, got 0"),
        (dict(stop=["a", "b", "c", "d", "e"]), "at most 4"),
        (dict(max_tokens=100000), "exceeds the context length of 2048"),
        (dict(tool_choice="required"), "tool_choice requires tools"),
        (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}),
         "response_format.json_schema.schema does not compile"),
        (dict(logit_bias={"1": 101}), "logit_bias.1 must be a number between -100 and 100, got 101"),
        (dict(logit_bias={"99999999": 1}), "logit_bias.99999999 is not a token id"),
        (dict(top_logprobs=3), "top_logprobs needs logprobs"),
    ],
)
def test_bad_requests(client, kw, needle):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "hi", **kw)
    assert needle in str(e.value)
    assert e.value.type == "invalid_request_error"


def test_bad_messages(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[])
    assert "messages" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}],
        )
    assert "image_url" in str(e.value)


def test_unknown_model(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_found"
    assert "gpt-4o" in str(e.value)


def test_wrong_api_key():
    bad = openai.OpenAI(base_url=BASE_URL, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_full_queue_is_429_and_server_recovers(client):
    # --parallel 4 --max-queue 2: 16 concurrent long requests cannot all be admitted.
    results = []

    def one():
        try:
            r = client.completions.create(model=MODEL, prompt="Write a poem", max_tokens=48,
                                          extra_body={"ignore_eos": True})
            results.append(("ok", r.usage.completion_tokens))
        except openai.RateLimitError as e:
            results.append(("429", e.response.headers.get("retry-after")))

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 16, "a request hung"
    oks = [r for r in results if r[0] == "ok"]
    busy = [r for r in results if r[0] == "429"]
    assert oks and busy, results
    assert all(n == 48 for _, n in oks)
    assert all(ra == "1" for _, ra in busy)
    # Serves normally afterwards.
    assert chat(client, "hi", max_tokens=2).choices[0].message.content is not None
