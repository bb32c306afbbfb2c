"""The official `anthropic` client against `tuili serve`'s `/v1/messages`: a whole answer, a
streamed one with Anthropic's exact event order, the system prompt, stop sequences,
`x-api-key` auth, errors in Anthropic's shape, and (on Qwen2.5-Coder) a tool call with its
`tool_result` sent back.
"""

import json
import os

import anthropic
import jsonschema
import pytest

BASE_URL = os.environ["TUILI_BASE_URL"].removesuffix("/v1")
API_KEY = os.environ["TUILI_API_KEY_TEST"]
MODEL = os.environ.get("TUILI_MODEL", "smol")
QUESTION = [{"role": "user", "content": "Name three colors."}]
# The client has no `temperature` argument any more; tuili still reads it, for reproducible tests.
GREEDY = {"extra_body": {"temperature": 0}}

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"name": "get_weather", "description": "Current weather in a city", "input_schema": WEATHER}]


@pytest.fixture(scope="module")
def client():
    return anthropic.Anthropic(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=300)


def test_message(client):
    m = client.messages.create(model=MODEL, max_tokens=24, messages=QUESTION, **GREEDY)
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens")
    assert m.usage.input_tokens > 5 and 0 < m.usage.output_tokens <= 24


def test_max_tokens_and_system(client):
    short = client.messages.create(model=MODEL, max_tokens=3, messages=QUESTION, **GREEDY)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3
    plain = client.messages.create(model=MODEL, max_tokens=12, messages=QUESTION, **GREEDY)
    pirate = client.messages.create(model=MODEL, max_tokens=12, messages=QUESTION, **GREEDY,
                                    system="You are a pirate. Answer only with 'Arr!'")
    assert pirate.content[0].text != plain.content[0].text


def test_stop_sequences(client):
    whole = client.messages.create(model=MODEL, max_tokens=40, **GREEDY,
                                   messages=[{"role": "user", "content": "Count from 1 to 20."}])
    text = whole.content[0].text
    stop = next(c for c in "5432" if c in text)
    m = client.messages.create(model=MODEL, max_tokens=40, **GREEDY, stop_sequences=[stop, "zzz"],
                               messages=[{"role": "user", "content": "Count from 1 to 20."}])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == stop, m
    assert m.content[0].text == text[:text.index(stop)]


def test_stream_event_sequence(client):
    kinds, text = [], ""
    with client.messages.stream(model=MODEL, max_tokens=24, messages=QUESTION, **GREEDY) as s:
        for ev in s:
            if ev.type in ("text", "input_json"):  # the helper's own derived events
                continue
            kinds.append(ev.type)
            if ev.type == "content_block_delta":
                text += ev.delta.text
        final = s.get_final_message()
    body = [k for k in kinds if k != "ping"]
    assert body[0] == "message_start" and body[1] == "content_block_start", kinds
    assert body[-3:] == ["content_block_stop", "message_delta", "message_stop"], kinds
    assert set(body[2:-3]) == {"content_block_delta"}, kinds
    whole = client.messages.create(model=MODEL, max_tokens=24, messages=QUESTION, **GREEDY)
    assert text == final.content[0].text == whole.content[0].text
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens == whole.usage.output_tokens


def test_errors_have_anthropic_shape(client):
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=MODEL, max_tokens=0, messages=QUESTION)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}])
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="no-such-model", max_tokens=5, messages=QUESTION)
    assert e.value.body["error"]["type"] == "not_found_error"
    bad = anthropic.Anthropic(base_url=BASE_URL, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model=MODEL, max_tokens=5, messages=QUESTION)
    assert e.value.body["error"]["type"] == "authentication_error"


@pytest.mark.skipif(MODEL != "qwen", reason="tool calls run on Qwen2.5-Coder")
@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_round_trip(client, stream):
    kw = dict(model=MODEL, max_tokens=120, **GREEDY, tools=TOOLS)
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        with client.messages.stream(messages=ask, tool_choice={"type": "any"}, **kw) as s:
            kinds = [ev.type for ev in s]
            m = s.get_final_message()
        assert "content_block_start" in kinds and kinds[-1] == "message_stop"
    else:
        m = client.messages.create(messages=ask, tool_choice={"type": "any"}, **kw)
    assert m.stop_reason == "tool_use", m
    use = [b for b in m.content if b.type == "tool_use"][0]
    assert use.id.startswith("toolu_") and use.name == "get_weather"
    jsonschema.validate(use.input, WEATHER)
    history = ask + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": json.dumps({"temperature": 21, "sky": "sunny"})}]},
    ]
    final = client.messages.create(messages=history, **kw)
    assert final.stop_reason == "end_turn" and "21" in final.content[0].text, final
