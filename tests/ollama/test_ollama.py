"""The official `ollama` client against `tuili serve`'s Ollama API: `/api/chat` and
`/api/generate` whole and streamed (newline-delimited JSON), `format` schemas, options,
`/api/tags`, `/api/show`, `/api/version`, errors in Ollama's shape, and (on Qwen2.5-Coder) a
tool call with its result sent back.
"""

import json
import os

import httpx
import jsonschema
import ollama
import pytest

HOST = os.environ["TUILI_BASE_URL"].removesuffix("/v1")
API_KEY = os.environ["TUILI_API_KEY_TEST"]
MODEL = os.environ.get("TUILI_MODEL", "smol")
GREEDY = {"temperature": 0, "num_predict": 24}
QUESTION = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module")
def client():
    return ollama.Client(host=HOST, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300)


def test_chat_whole_and_streamed(client):
    r = client.chat(model=MODEL, messages=QUESTION, options=GREEDY)
    assert r.done and r.done_reason in ("stop", "length") and r.message.role == "assistant"
    assert r.message.content and r.prompt_eval_count > 5 and 0 < r.eval_count <= 24
    assert r.total_duration >= r.eval_duration > 0
    parts = list(client.chat(model=MODEL, messages=QUESTION, options=GREEDY, stream=True))
    assert len(parts) > 2 and all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content for p in parts) == r.message.content
    assert parts[-1].eval_count == r.eval_count


def test_generate_whole_and_streamed(client):
    r = client.generate(model=MODEL, prompt="Name three colors.", options=GREEDY)
    chat = client.chat(model=MODEL, messages=QUESTION, options=GREEDY)
    # The prompt is one user turn through the chat template.
    assert r.response == chat.message.content and r.done
    parts = list(client.generate(model=MODEL, prompt="Name three colors.", options=GREEDY, stream=True))
    assert "".join(p.response for p in parts) == r.response and parts[-1].done
    short = client.generate(model=MODEL, prompt="Name three colors.", options={"num_predict": 3})
    assert short.done_reason == "length" and short.eval_count == 3
    pirate = client.generate(model=MODEL, prompt="Name three colors.", options=GREEDY,
                             system="You are a pirate. Answer only with 'Arr!'")
    assert pirate.response != r.response


def test_format_schema(client):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 120}},
              "required": ["name", "age"], "additionalProperties": False}
    r = client.chat(model=MODEL, messages=[{"role": "user", "content": "Describe a person as JSON."}],
                    format=schema, options={"temperature": 0, "num_predict": 60})
    jsonschema.validate(json.loads(r.message.content), schema)
    r = client.generate(model=MODEL, prompt="Give a JSON object.", format="json",
                        options={"temperature": 0, "num_predict": 60})
    assert isinstance(json.loads(r.response), dict)


def test_tags_show_version(client):
    tags = client.list()
    assert [m.model for m in tags.models] == [MODEL]
    show = client.show(MODEL)
    assert show.template and show.details.format == "gguf"
    assert "completion" in show.capabilities
    # Open, as /health: apps probe it before anything else.
    v = httpx.get(HOST + "/api/version").json()["version"]
    assert v and v[0].isdigit()


def test_errors_have_ollama_shape(client):
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="no-such-model", messages=QUESTION)
    assert e.value.status_code == 404 and "no-such-model" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model=MODEL, messages=QUESTION, options={"temperature": -3})
    assert e.value.status_code == 400 and "temperature" in e.value.error
    bad = ollama.Client(host=HOST, headers={"Authorization": "Bearer wrong"})
    with pytest.raises(ollama.ResponseError) as e:
        bad.chat(model=MODEL, messages=QUESTION)
    assert e.value.status_code == 401


@pytest.mark.skipif(MODEL != "qwen", reason="tool calls run on Qwen2.5-Coder")
def test_tool_result_round_trip(client):
    """A call in Ollama's layout (arguments an object, no ids) and its result, sent back:
    the answer uses the result. (Ollama has no tool_choice, and Qwen2.5-Coder-0.5B rarely
    calls unprompted; calls coming out are checked through the same code by the Anthropic
    and OpenAI suites.)"""
    def get_weather(city: str) -> str:
        """Current weather in a city.

        Args:
          city: The city name
        """
        return json.dumps({"temperature": 21, "sky": "sunny"})

    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": get_weather("Paris"), "tool_name": "get_weather"},
    ]
    r = client.chat(model=MODEL, messages=history, tools=[get_weather],
                    options={"temperature": 0, "num_predict": 60})
    assert r.done_reason == "stop" and "21" in r.message.content, r.message.content
    assert not r.message.tool_calls
