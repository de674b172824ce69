"""The OpenAI Responses API (`/v1/responses`) through the gateway, driven by the official `openai` SDK.

The gateway translates a Responses request into a chat request, serves it on whatever provider the model
names, and translates the answer back (crates/wire/src/inbound/responses.rs). So every test here runs over
several upstream wire formats behind one `switchyard serve` (conftest.py's `stack`): the OpenAI mock, the
Anthropic mock and the Ollama mock. The mocks answer deterministically (crates/mock/src/lib.rs: `echo: <last
user text>`, image notes, `[[tool:NAME {json}]]`, `[[error:STATUS]]`), so every assertion is exact.

The SDK's own retries are off (`max_retries=0`).
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from conftest import Procs, Stack, data_url, http_json, image_note

MODEL = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-sonnet-4-6",
    "local": "local/llama3.2:latest",
}
UPSTREAM_PATH = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "local": "/api/chat"}
PROVIDERS = list(MODEL)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}
WEATHER_ARGS = {"city": "Paris", "unit": "C"}
TIME_ARGS = {"tz": "Europe/Paris"}


def last_post(stack: Stack, provider: str) -> dict:
    reqs = [r for r in stack.mocks[provider].requests() if r["method"] == "POST"]
    assert reqs, f"the {provider} mock saw no request"
    return reqs[-1]


def event_types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


def check_sequence(events: list[Any]) -> None:
    """What every Responses stream holds: lifecycle events around the items, numbered from 0 in order."""
    assert [e.sequence_number for e in events] == list(range(len(events)))
    types = event_types(events)
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] in ("response.completed", "response.incomplete")
    assert types.count("response.output_item.added") == types.count("response.output_item.done")


# ---------------------------------------------------------------------------------------------------------
# Plain answers
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_create_plain(stack: Stack, provider: str):
    raw = stack.client().responses.with_raw_response.create(model=MODEL[provider], input="hello there")
    r = raw.parse()
    assert r.object == "response"
    assert r.id.startswith("resp_")
    assert r.status == "completed"
    assert r.model == MODEL[provider].split("/", 1)[1]
    assert r.output_text == "echo: hello there"
    assert len(r.output) == 1
    msg = r.output[0]
    assert (msg.type, msg.role, msg.status) == ("message", "assistant", "completed")
    assert msg.content[0].type == "output_text" and msg.content[0].annotations == []
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (2, 3, 5)
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    assert r.incomplete_details is None and r.error is None
    # Attribution headers as on chat.
    assert raw.headers["x-switchyard-provider"] == provider
    assert raw.headers["x-switchyard-model"] == r.model
    assert raw.headers["x-switchyard-attempts"] == "1"
    assert raw.headers["x-request-id"]
    # The upstream got its own API shape.
    assert last_post(stack, provider)["path"] == UPSTREAM_PATH[provider]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_instructions_metadata_and_settings_are_kept(stack: Stack, provider: str):
    r = stack.client().responses.create(
        model=MODEL[provider],
        instructions="be brief and kind",
        input=[{"role": "user", "content": "hello there"}],
        metadata={"ticket": "T-1"},
        temperature=0.3,
        max_output_tokens=50,
        store=False,
        user="someone",
    )
    assert r.output_text == "echo: hello there"
    # The mock counts the instructions' words: they arrived as a system prompt.
    assert r.usage.input_tokens == 6
    assert (r.instructions, r.metadata, r.temperature, r.max_output_tokens) == ("be brief and kind", {"ticket": "T-1"}, 0.3, 50)
    assert r.tool_choice == "auto" and r.tools == [] and r.parallel_tool_calls is True
    body = last_post(stack, provider)["body"]
    system = {"openai": lambda b: b["messages"][0], "anthropic": lambda b: b["system"], "local": lambda b: b["messages"][0]}
    assert "be brief and kind" in json.dumps(system[provider](body))


def test_store_true_is_accepted_and_not_kept(stack: Stack):
    client = stack.client()
    r = client.responses.create(model=MODEL["openai"], input="remember me", store=True)
    assert r.output_text == "echo: remember me"
    # The gateway says what it did: nothing is stored, so the id cannot be read back.
    assert r.model_extra.get("store") is False
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.retrieve(r.id)
    assert r.id in e.value.message and e.value.code == "response_not_found"
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(r.id)


def test_previous_response_id_is_a_clear_400(stack: Stack):
    client = stack.client()
    first = client.responses.create(model=MODEL["openai"], input="one")
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL["openai"], input="two", previous_response_id=first.id)
    err = e.value
    assert (err.status_code, err.code, err.param, err.type) == (400, "previous_response_not_found", "previous_response_id", "invalid_request_error")
    assert first.id in err.message and "input" in err.message


def test_multi_turn_by_sending_the_output_back(stack: Stack):
    client = stack.client()
    first = client.responses.create(model=MODEL["anthropic"], input="first question")
    history = [{"role": "user", "content": "first question"}, *[i.model_dump(exclude_none=True) for i in first.output]]
    second = client.responses.create(model=MODEL["anthropic"], input=[*history, {"role": "user", "content": "second question"}])
    assert second.output_text == "echo: second question"
    msgs = last_post(stack, "anthropic")["body"]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert "echo: first question" in json.dumps(msgs[1])


def test_openai_prefix_alias(stack: Stack):
    client = openai.OpenAI(base_url=stack.url + "/openai/v1", api_key="anything", max_retries=0)
    assert client.responses.create(model=MODEL["local"], input="prefixed").output_text == "echo: prefixed"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_max_output_tokens_makes_an_incomplete_response(stack: Stack, provider: str):
    r = stack.client().responses.create(model=MODEL[provider], input="one two three four five", max_output_tokens=16)
    # The mock keeps the first N words of its reply: 16 is more than the 6 words here.
    assert r.status == "completed"
    r = stack.client().responses.create(model=MODEL[provider], input="one two three four five", max_output_tokens=2)
    assert r.status == "incomplete"
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == "echo: one"
    assert r.output[0].status == "incomplete"


# ---------------------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_true(stack: Stack, provider: str):
    raw = stack.client().responses.with_raw_response.create(model=MODEL[provider], input="hello stream world", stream=True)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-switchyard-provider"] == provider
    events = list(raw.parse())
    check_sequence(events)
    types = [t for t in event_types(events) if t != "response.output_text.delta"]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1, "the text arrives in pieces"
    assert "".join(deltas) == "echo: hello stream world"
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == "echo: hello stream world"
    created, completed = events[0].response, events[-1].response
    assert created.id == completed.id and created.status == "in_progress" and created.output == []
    assert completed.status == "completed"
    assert completed.output_text == "echo: hello stream world"
    assert (completed.usage.input_tokens, completed.usage.output_tokens) == (3, 4)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_helper(stack: Stack, provider: str):
    client = stack.client()
    seen: list[str] = []
    with client.responses.stream(model=MODEL[provider], input="helper please") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                seen.append(event.delta)
                # The helper keeps the text so far.
                assert event.snapshot == "".join(seen)
        final = stream.get_final_response()
    assert "".join(seen) == "echo: helper please"
    assert final.output_text == "echo: helper please"
    assert final.status == "completed"
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens > 0


def test_raw_stream_frames(stack: Stack):
    # What a client without the SDK reads: named events, JSON data, no [DONE].
    import urllib.request

    req = urllib.request.Request(
        stack.url + "/v1/responses",
        data=json.dumps({"model": MODEL["openai"], "input": "raw frames", "stream": True}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=20) as r:
        text = r.read().decode()
    frames = [f for f in text.split("\n\n") if f.strip() and not f.startswith(":")]
    assert "[DONE]" not in text
    for f in frames:
        ev, data = f.split("\n", 1)
        assert ev.startswith("event: ") and data.startswith("data: ")
        assert json.loads(data[6:])["type"] == ev[7:]
    assert json.loads(frames[-1].split("\n", 1)[1][6:])["response"]["output"][0]["content"][0]["text"] == "echo: raw frames"


# ---------------------------------------------------------------------------------------------------------
# Function tools
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_function_call_and_output_round_trip(stack: Stack, provider: str):
    client = stack.client()
    ask = f"weather and time [[tool:get_weather {json.dumps(WEATHER_ARGS)}]] [[tool:get_time {json.dumps(TIME_ARGS)}]]"
    r = client.responses.create(model=MODEL[provider], input=ask, tools=[WEATHER, TIME])
    calls = [i for i in r.output if i.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", WEATHER_ARGS), ("get_time", TIME_ARGS)]
    assert all(c.call_id and c.status == "completed" for c in calls)
    assert len({c.call_id for c in calls}) == 2
    # The upstream got the tools in its own shape.
    body = last_post(stack, provider)["body"]
    assert "get_weather" in json.dumps(body["tools"])

    # The Agents SDK's loop: the output items go back as input, each call followed by its output.
    follow_up = [
        {"role": "user", "content": ask},
        *[i.model_dump(exclude_none=True) for i in r.output],
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 18 C"},
        {"type": "function_call_output", "call_id": calls[1].call_id, "output": "10:42"},
    ]
    r2 = client.responses.create(model=MODEL[provider], input=follow_up, tools=[WEATHER, TIME])
    assert r2.output_text == "tool results: sunny, 18 C | 10:42"
    assert r2.status == "completed"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_streamed_function_calls(stack: Stack, provider: str):
    client = stack.client()
    ask = f"stream a call [[tool:get_weather {json.dumps(WEATHER_ARGS)}]]"
    with client.responses.stream(model=MODEL[provider], input=ask, tools=[WEATHER]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    check_sequence(events)
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    # Ollama sends a call whole; the others in fragments.
    assert len(deltas) >= (1 if provider == "local" else 2)
    assert json.loads("".join(deltas)) == WEATHER_ARGS
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == WEATHER_ARGS
    call = next(i for i in final.output if i.type == "function_call")
    assert (call.name, json.loads(call.arguments)) == ("get_weather", WEATHER_ARGS)
    assert call.call_id


def test_forced_tool_choice(stack: Stack):
    r = stack.client().responses.create(
        model=MODEL["openai"], input="no directive here", tools=[WEATHER, TIME], tool_choice={"type": "function", "name": "get_time"}
    )
    assert [(i.type, i.name) for i in r.output] == [("function_call", "get_time")]
    assert last_post(stack, "openai")["body"]["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}


# ---------------------------------------------------------------------------------------------------------
# Images and structured output
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_image_input(stack: Stack, png_bytes: bytes, provider: str):
    r = stack.client().responses.create(
        model=MODEL[provider],
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is this"},
                    {"type": "input_image", "image_url": data_url(png_bytes), "detail": "auto"},
                ],
            }
        ],
    )
    assert r.output_text == "echo: what is this" + image_note(png_bytes)


@pytest.mark.parametrize("provider", ["openai", "local"])
def test_image_by_url(stack: Stack, image_server, provider: str):
    url = image_server.url + "/pixel.png"
    r = stack.client().responses.create(
        model=MODEL[provider],
        input=[{"role": "user", "content": [{"type": "input_text", "text": "see"}, {"type": "input_image", "image_url": url, "detail": "low"}]}],
    )
    # OpenAI takes the URL; Ollama needs bytes, which the gateway fetched.
    note = f" [image-url {url}]" if provider == "openai" else image_note(image_server.png)
    assert r.output_text == "echo: see" + note


class Echo(BaseModel):
    echo: str


@pytest.mark.parametrize("provider", ["openai", "local"])
def test_structured_output(stack: Stack, provider: str):
    client = stack.client()
    parsed = client.responses.parse(model=MODEL[provider], input="structure me", text_format=Echo)
    assert parsed.output_parsed == Echo(echo="structure me")
    body = last_post(stack, provider)["body"]
    if provider == "openai":
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["name"] == "Echo"
    else:
        assert body["format"]["properties"]["echo"]["type"] == "string"
    r = client.responses.create(model=MODEL[provider], input="plain json", text={"format": {"type": "json_object"}})
    assert json.loads(r.output_text) == {"echo": "plain json"}
    assert r.text.format.type == "json_object"


# ---------------------------------------------------------------------------------------------------------
# Errors, fallbacks and keys
# ---------------------------------------------------------------------------------------------------------


def test_requests_the_gateway_cannot_serve_are_400s(stack: Stack):
    client = stack.client()
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL["openai"], input="search", tools=[{"type": "web_search"}])
    assert (e.value.param, e.value.code) == ("tools[0].type", "unsupported_parameter")
    assert "web_search" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL["openai"], input=[{"type": "item_reference", "id": "msg_1"}])
    assert e.value.param == "input[0]"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL["openai"], input=[{"role": "user", "content": [{"type": "input_text"}]}])
    assert e.value.param == "input[0].content[0].text"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL["openai"], input="x", temperature=9)
    assert e.value.param == "temperature"
    # A body that is not a Responses request names the field, in OpenAI's shape.
    status, body = http_json("POST", stack.url + "/v1/responses", {"model": MODEL["openai"], "input": "x", "max_output_tokens": "lots"})
    assert status == 400 and body["error"]["param"] == "max_output_tokens" and body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_upstream_errors_are_the_sdks_exceptions(stack: Stack, provider: str):
    client = stack.client()
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL[provider], input="[[error:400]]")
    assert e.value.body["attempts"][0]["class"] == "caller_fault"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nobody/gpt-4o-mini", input="x")
    with pytest.raises(openai.UnprocessableEntityError):
        client.responses.create(model=MODEL[provider], input="[[error:422]]", stream=True)


def test_route_fallback(fresh: Stack):
    raw = fresh.client().responses.with_raw_response.create(model="flaky/gpt-4o-mini", input="save me")
    assert raw.parse().output_text == "echo: save me"
    assert raw.headers["x-switchyard-provider"] == "openai"
    assert raw.headers["x-switchyard-fallback-index"] == "1"
    assert raw.headers["x-switchyard-attempts"] == "2"


def test_request_body_fallbacks_across_formats_streamed(fresh: Stack):
    raw = fresh.client().responses.with_raw_response.create(
        model="flaky/gpt-4o", input="fall over", stream=True, extra_body={"fallbacks": ["anthropic/claude-haiku-4-5"]}
    )
    assert raw.headers["x-switchyard-provider"] == "anthropic"
    events = list(raw.parse())
    check_sequence(events)
    assert events[-1].response.output_text == "echo: fall over"
    assert events[-1].response.model == "claude-haiku-4-5"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_stream_that_breaks_after_it_began_ends_in_response_failed(fresh: Stack, provider: str):
    stream = fresh.client().responses.create(model=f"{MODEL[provider]}+kind=reset", input="one two three four five six", stream=True)
    events = list(stream)
    types = event_types(events)
    assert types[0] == "response.created"
    assert "response.completed" not in types
    assert types[-2:] == ["error", "response.failed"]
    err = events[-2]
    assert err.code == "stream_interrupted" and err.message
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "server_error"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("echo: ") and "one two three four five six" not in text
    # The stream helper has no final response to give for it.
    with fresh.client().responses.stream(model=f"{MODEL[provider]}+kind=reset", input="one two three four five six") as s:
        assert "error" in [e.type for e in s]
        with pytest.raises(RuntimeError):
            s.get_final_response()


def test_virtual_keys_apply(procs: Procs, mocks):
    config = {
        "providers": {"openai": {"type": "openai", "base_url": mocks["openai"].url, "keys": [{"value": "sk-openai-test"}]}},
        "governance": {
            "virtual_keys": [
                {"id": "vk-responses", "name": "responses-team", "value": "sk-vk-responses",
                 "provider_configs": [{"provider": "openai", "allowed_models": ["gpt-4o-mini"]}]}
            ]
        },
    }
    gw = procs.gateway(config, name="gateway-responses-keys")
    try:
        bad = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-not-ours", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.responses.create(model="openai/gpt-4o-mini", input="x")
        good = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-vk-responses", max_retries=0)
        assert good.responses.create(model="openai/gpt-4o-mini", input="mine").output_text == "echo: mine"
        with pytest.raises(openai.PermissionDeniedError):
            good.responses.create(model="openai/gpt-4o", input="not mine")
        with pytest.raises(openai.AuthenticationError):
            with bad.responses.stream(model="openai/gpt-4o-mini", input="x") as s:
                list(s)
    finally:
        procs.stop(gw.proc)
