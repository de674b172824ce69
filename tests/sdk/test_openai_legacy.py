"""The OpenAI SDK's older and smaller surfaces through the gateway: the legacy Completions API
(`completions.create`, plain and streamed) over two upstreams of different wire formats (OpenAI and
Anthropic mocks), `models.retrieve` (a hit whose id holds a `/`, and a miss), and chat to a Cohere upstream
(its v2 API behind the OpenAI shape): text, stream, tools and a tool-result round trip.

The mocks answer deterministically (crates/mock/src/lib.rs): `echo: <last user text>`, `[[tool:NAME {json}]]`
directives, usage counted in words. The SDK's own retries are off, so what the test sees is the gateway's.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from conftest import Gateway, Mock, Procs, http_json

COMPLETION_MODELS = {"openai": "openai/gpt-4o-mini", "anthropic": "anthropic/claude-sonnet-4-6"}
UPSTREAM_PATH = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
COHERE = "cohere/command-a-03-2025"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def cohere_mock(procs: Procs) -> Mock:
    return procs.mock("cohere")


@pytest.fixture(scope="module")
def gw(procs: Procs, mocks: dict[str, Mock], cohere_mock: Mock) -> Gateway:
    config: dict[str, Any] = {
        "routing": {"deadline": "20s"},
        "providers": {
            "openai": {"type": "openai", "base_url": mocks["openai"].url, "keys": [{"value": "sk-openai-test"}]},
            "anthropic": {"type": "anthropic", "base_url": mocks["anthropic"].url, "keys": [{"value": "sk-ant-test"}]},
            "cohere": {"type": "cohere", "base_url": cohere_mock.url, "keys": [{"value": "co-test-key"}]},
            # The same mock under another name, for the rate-limit test: a 429 cools its key down, and
            # that must not reach the other tests.
            "cohere-limited": {"type": "cohere", "base_url": cohere_mock.url, "keys": [{"value": "co-limited-key"}]},
        },
    }
    return procs.gateway(config, name="gateway-legacy")


@pytest.fixture(scope="module")
def client(gw: Gateway) -> openai.OpenAI:
    return gw.client()


def last_upstream_body(mock: Mock, path: str) -> dict:
    reqs = [r for r in mock.requests() if r["path"] == path]
    assert reqs, f"no request reached {path}"
    return reqs[-1]["body"]


# ---------------------------------------------------------------------------------------------------------
# Legacy completions
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", list(COMPLETION_MODELS))
def test_completion_plain(client: openai.OpenAI, mocks: dict[str, Mock], provider: str) -> None:
    c = client.completions.create(model=COMPLETION_MODELS[provider], prompt="hello world")
    assert isinstance(c, openai.types.Completion)
    assert c.object == "text_completion"
    assert c.id.startswith(("cmpl-", "cmpl_")) or c.id.startswith("cmpl")
    assert len(c.choices) == 1
    choice = c.choices[0]
    assert (choice.text, choice.index, choice.finish_reason, choice.logprobs) == ("echo: hello world", 0, "stop", None)
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (2, 3, 5)
    # The prompt reached the upstream as one user message, with the legacy API's default of 16 tokens.
    body = last_upstream_body(mocks[provider], UPSTREAM_PATH[provider])
    assert body["messages"] == [{"role": "user", "content": "hello world"}]
    assert body["max_tokens"] == 16


@pytest.mark.parametrize("provider", list(COMPLETION_MODELS))
def test_completion_stream(client: openai.OpenAI, provider: str) -> None:
    stream = client.completions.create(
        model=COMPLETION_MODELS[provider], prompt="one two three", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks, "no chunks"
    assert all(ch.object == "text_completion" for ch in chunks)
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == "echo: one two three"
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 4)
    assert len({ch.id for ch in chunks}) == 1, "one id for the whole stream"


@pytest.mark.parametrize("provider", list(COMPLETION_MODELS))
def test_completion_stream_without_usage(client: openai.OpenAI, provider: str) -> None:
    chunks = list(client.completions.create(model=COMPLETION_MODELS[provider], prompt="a b", stream=True))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == "echo: a b"
    assert all(ch.usage is None for ch in chunks)


@pytest.mark.parametrize("provider", list(COMPLETION_MODELS))
def test_completion_limits_echo_and_stop(client: openai.OpenAI, provider: str) -> None:
    model = COMPLETION_MODELS[provider]
    c = client.completions.create(model=model, prompt="one two three four", max_tokens=2)
    assert (c.choices[0].text, c.choices[0].finish_reason) == ("echo: one", "length")
    c = client.completions.create(model=model, prompt="one two three four", stop=["three"])
    assert (c.choices[0].text, c.choices[0].finish_reason) == ("echo: one two ", "stop")
    c = client.completions.create(model=model, prompt="Q: hi", echo=True)
    assert c.choices[0].text == "Q: hiecho: Q: hi"
    chunks = list(client.completions.create(model=model, prompt="Q: hi", echo=True, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == "Q: hiecho: Q: hi"


def test_completion_n_where_the_provider_has_it(client: openai.OpenAI) -> None:
    c = client.completions.create(model=COMPLETION_MODELS["openai"], prompt="hi", n=2)
    assert [(ch.index, ch.text) for ch in c.choices] == [(0, "echo: hi"), (1, "echo: hi")]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=COMPLETION_MODELS["anthropic"], prompt="hi", n=2)
    assert "n = 2" in str(e.value)


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"suffix": "THE END"}, "suffix"),
        ({"logprobs": 1}, "logprobs"),
        ({"best_of": 3}, "best_of"),
    ],
)
def test_completion_refusals_name_the_field(client: openai.OpenAI, extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=COMPLETION_MODELS["openai"], prompt="hi", **extra)
    assert e.value.status_code == 400
    assert e.value.body["param"] == param
    assert e.value.body["type"] == "invalid_request_error"


def test_completion_prompt_forms(client: openai.OpenAI) -> None:
    c = client.completions.create(model=COMPLETION_MODELS["openai"], prompt=["just one"])
    assert c.choices[0].text == "echo: just one"
    for prompt, words in [(["a", "b"], "2 prompts"), ([1, 2, 3], "token-id")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(model=COMPLETION_MODELS["openai"], prompt=prompt)
        assert words in str(e.value) and e.value.body["param"] == "prompt"


def test_completion_upstream_errors_and_unknown_models(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="openai/no-such-model", prompt="hi")
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=COMPLETION_MODELS["anthropic"], prompt="[[error:400]]")


def test_completion_under_the_openai_prefix(gw: Gateway) -> None:
    c = openai.OpenAI(base_url=gw.url + "/openai/v1", api_key="x", max_retries=0).completions.create(
        model=COMPLETION_MODELS["openai"], prompt="via prefix"
    )
    assert c.choices[0].text == "echo: via prefix"


# ---------------------------------------------------------------------------------------------------------
# models.retrieve
# ---------------------------------------------------------------------------------------------------------


def test_models_retrieve_hit_and_miss(client: openai.OpenAI, gw: Gateway) -> None:
    listed = {m.id: m for m in client.models.list()}
    for model_id in ["openai/gpt-4o-mini", COHERE, "anthropic/claude-sonnet-4-6"]:
        m = client.models.retrieve(model_id)
        assert (m.id, m.object, m.owned_by) == (model_id, "model", listed[model_id].owned_by)
    # The id's slash sent as is (curl, hand-written clients) works as well as the SDK's %2F.
    status, body = http_json("GET", gw.url + "/v1/models/openai/gpt-4o-mini")
    assert (status, body["id"]) == (200, "openai/gpt-4o-mini")
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("openai/gpt-9-imaginary")
    assert e.value.body["code"] == "model_not_found"
    assert e.value.body["type"] == "invalid_request_error"


# ---------------------------------------------------------------------------------------------------------
# Chat to Cohere through the OpenAI SDK
# ---------------------------------------------------------------------------------------------------------


def test_cohere_chat_text(client: openai.OpenAI, cohere_mock: Mock) -> None:
    r = client.chat.completions.with_raw_response.create(
        model=COHERE, messages=[{"role": "system", "content": "be terse"}, {"role": "user", "content": "hello there"}], top_p=1.0
    )
    assert r.headers["x-switchyard-provider"] == "cohere"
    c = r.parse()
    assert (c.choices[0].message.content, c.choices[0].finish_reason) == ("echo: hello there", "stop")
    # The billed count: the mock's `tokens` add Cohere's template on top.
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (4, 3)
    sent = last_upstream_body(cohere_mock, "/v2/chat")
    assert sent["messages"][0] == {"role": "system", "content": "be terse"}
    assert sent["p"] == 0.99 and "top_p" not in sent


def test_cohere_chat_stream(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=COHERE, messages=[{"role": "user", "content": "stream me please"}], stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "echo: stream me please"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.total_tokens == 3 + 4


def test_cohere_tools_round_trip(client: openai.OpenAI, cohere_mock: Mock) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": 'weather? [[tool:get_weather {"city":"Paris"}]]'}]
    c = client.chat.completions.create(model=COHERE, messages=messages, tools=[WEATHER])
    choice = c.choices[0]
    assert choice.finish_reason == "tool_calls"
    # Cohere's tool plan is what the model says before calling: the message's content.
    assert choice.message.content == "I will call get_weather."
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("get_weather_")
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "18C"})
    c2 = client.chat.completions.create(model=COHERE, messages=messages, tools=[WEATHER])
    assert c2.choices[0].message.content == "tool results: 18C"
    # The assistant's text went back as Cohere's `tool_plan`, never as content beside the calls.
    sent = last_upstream_body(cohere_mock, "/v2/chat")["messages"][1]
    assert sent["tool_plan"] == "I will call get_weather." and "content" not in sent


def test_cohere_forced_tool_and_stream_tools(client: openai.OpenAI) -> None:
    c = client.chat.completions.create(
        model=COHERE,
        messages=[{"role": "user", "content": "anything"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert [t.function.name for t in c.choices[0].message.tool_calls] == ["get_weather"]
    chunks = list(
        client.chat.completions.create(
            model=COHERE,
            messages=[{"role": "user", "content": '[[tool:get_weather {"city":"Oslo"}]] [[tool:get_weather {"city":"Rome"}]]'}],
            tools=[WEATHER],
            stream=True,
        )
    )
    calls: dict[int, dict[str, str]] = {}
    for ch in chunks:
        for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            slot = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
            slot["id"] += tc.id or ""
            slot["name"] += (tc.function.name or "") if tc.function else ""
            slot["args"] += (tc.function.arguments or "") if tc.function else ""
    assert sorted(calls) == [0, 1]
    assert [json.loads(calls[i]["args"]) for i in (0, 1)] == [{"city": "Oslo"}, {"city": "Rome"}]
    assert calls[0]["id"] != calls[1]["id"]
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["tool_calls"]


def test_cohere_refusals_and_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=COHERE, messages=[{"role": "user", "content": "hi"}], n=2)
    assert e.value.body["code"] == "unsupported_by_provider" and "n = 2" in str(e.value)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="cohere-limited/command-a-03-2025", messages=[{"role": "user", "content": "[[error:429]]"}])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=COHERE, messages=[{"role": "user", "content": "[[context]]"}])
    assert e.value.body["code"] == "context_length_exceeded"


def test_cohere_embeddings(client: openai.OpenAI) -> None:
    r = client.embeddings.create(model="cohere/embed-v4.0", input=["alpha", "beta gamma"])
    assert [d.index for d in r.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in r.data)
    assert r.usage.prompt_tokens == 3
