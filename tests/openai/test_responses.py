"""The official `openai` client's `responses.create` against `tuili serve`'s `/v1/responses`:
input as a string and as items, instructions, the streaming event sequence, `text.format`
json_schema, `previous_response_id` and `store: false`, bad requests, and (on Qwen2.5-Coder)
function tools: a `function_call` item and its `function_call_output` sent back.
"""

import json
import os

import jsonschema
import openai
import pytest

BASE_URL = os.environ["TUILI_BASE_URL"]
API_KEY = os.environ["TUILI_API_KEY_TEST"]
MODEL = os.environ.get("TUILI_MODEL", "smol")
GREEDY = {"temperature": 0}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
           "additionalProperties": False}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather in a city",
          "parameters": WEATHER}]


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=300)


def test_string_input(client):
    r = client.responses.create(model=MODEL, input="Name three colors.", max_output_tokens=20, **GREEDY)
    assert r.object == "response" and r.id.startswith("resp_") and r.status in ("completed", "incomplete")
    assert r.output[0].type == "message" and r.output_text
    assert r.usage.input_tokens > 5 and 0 < r.usage.output_tokens <= 20
    short = client.responses.create(model=MODEL, input="Name three colors.", max_output_tokens=3, **GREEDY)
    assert short.status == "incomplete" and short.incomplete_details.reason == "max_output_tokens"


def test_items_and_instructions(client):
    items = [{"role": "user", "content": [{"type": "input_text", "text": "Name three colors."}]}]
    a = client.responses.create(model=MODEL, input=items, max_output_tokens=12, **GREEDY)
    b = client.responses.create(model=MODEL, input="Name three colors.", max_output_tokens=12, **GREEDY)
    assert a.output_text == b.output_text
    c = client.responses.create(model=MODEL, input=items, max_output_tokens=12, **GREEDY,
                                instructions="You are a pirate. Answer only with 'Arr!'")
    assert c.output_text != a.output_text and c.instructions.startswith("You are a pirate")


def test_stream_events(client):
    whole = client.responses.create(model=MODEL, input="Name three colors.", max_output_tokens=24, **GREEDY)
    kinds, text, seqs = [], "", []
    for ev in client.responses.create(model=MODEL, input="Name three colors.", max_output_tokens=24,
                                      stream=True, **GREEDY):
        kinds.append(ev.type)
        seqs.append(ev.sequence_number)
        if ev.type == "response.output_text.delta":
            text += ev.delta
        if ev.type in ("response.completed", "response.incomplete"):
            final = ev.response
    assert seqs == list(range(len(seqs)))
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"], kinds
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response." + whole.status], kinds
    assert set(kinds[4:-4]) == {"response.output_text.delta"}, kinds
    assert text == whole.output_text == final.output_text


def test_json_schema_format(client):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 120}},
              "required": ["name", "age"], "additionalProperties": False}
    r = client.responses.create(model=MODEL, input="Describe a person as JSON.", max_output_tokens=60,
                                text={"format": {"type": "json_schema", "name": "person", "schema": schema,
                                                 "strict": True}}, **GREEDY)
    jsonschema.validate(json.loads(r.output_text), schema)


def test_previous_response_and_store(client):
    first = client.responses.create(model=MODEL, input="My name is Zorblax. Say hi.", max_output_tokens=12, **GREEDY)
    follow = client.responses.create(model=MODEL, input="What is my name?", previous_response_id=first.id,
                                     max_output_tokens=12, **GREEDY)
    alone = client.responses.create(model=MODEL, input="What is my name?", max_output_tokens=12, **GREEDY)
    # The earlier turn is in the prompt: more input tokens than the question alone.
    assert follow.usage.input_tokens > alone.usage.input_tokens + 8
    assert follow.previous_response_id == first.id
    unstored = client.responses.create(model=MODEL, input="Hi", store=False, max_output_tokens=4, **GREEDY)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input="Hi", previous_response_id=unstored.id, max_output_tokens=4)
    assert e.value.body["param"] == "previous_response_id"


def test_bad_requests(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input="Hi", max_output_tokens=-1)
    assert e.value.body["param"] == "max_output_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input="Hi", tools=[{"type": "web_search"}])
    assert e.value.body["param"] == "tools[0].type"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": "http://x/y.png"}]}])
    assert e.value.body["param"] == "input[0].content[0]"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="Hi")


@pytest.mark.skipif(MODEL != "qwen", reason="tool calls run on Qwen2.5-Coder")
@pytest.mark.parametrize("stream", [False, True])
def test_function_call_round_trip(client, stream):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    kw = dict(model=MODEL, tools=TOOLS, max_output_tokens=120, **GREEDY)
    if stream:
        kinds, args = [], ""
        for ev in client.responses.create(input=ask, tool_choice="required", stream=True, **kw):
            kinds.append(ev.type)
            if ev.type == "response.function_call_arguments.delta":
                args += ev.delta
            if ev.type == "response.completed":
                r = ev.response
        assert "response.function_call_arguments.done" in kinds, kinds
        assert args == r.output[-1].arguments
    else:
        r = client.responses.create(input=ask, tool_choice="required", **kw)
    call = [o for o in r.output if o.type == "function_call"][0]
    assert call.name == "get_weather" and call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    history = ask + [call.model_dump(exclude_none=True),
                     {"type": "function_call_output", "call_id": call.call_id,
                      "output": json.dumps({"temperature": 21, "sky": "sunny"})}]
    final = client.responses.create(input=history, **kw)
    assert final.status == "completed" and "21" in final.output_text, final.output_text
