"""The gateway as an Anthropic endpoint (`<gateway>/anthropic`), driven by the official `anthropic` Python SDK.

The same `stack` as test_openai_sdk.py (conftest.py): one gateway with an OpenAI mock (`openai`), an Anthropic
mock (`anthropic`) and an Ollama mock (`local`) behind it. Every scenario runs over all three, so an Anthropic
client sees the same answers whichever provider serves the model: the mocks answer deterministically
(crates/mock/src/lib.rs: `echo: <last user text>`, image and document notes, `[[tool:NAME {json}]]`,
`[[error:STATUS]]`), so every assertion is exact. The SDK's own retries are off (`max_retries=0`).

Structured output through the OpenAI SDK (`chat.completions.parse` with a pydantic model) over the Anthropic
mock is here too: it is the Anthropic codec's emulation with a forced tool call that it exercises.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Iterator

import anthropic
import openai
import pydantic
import pytest

from conftest import Procs, Stack, data_url, http_json, image_note, stack_config

# One chat model per upstream wire format behind the gateway.
CHAT = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-sonnet-4-6",
    "local": "local/llama3.2:latest",
}
IMAGE_MODEL = {**CHAT, "local": "local/llava:latest"}
UPSTREAM_PATH = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "local": "/api/chat"}
PROVIDERS = list(CHAT)

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}}


def client(stack_or_url: Any, **kw: Any) -> anthropic.Anthropic:
    url = stack_or_url if isinstance(stack_or_url, str) else stack_or_url.url
    kw.setdefault("api_key", "anything")
    return anthropic.Anthropic(base_url=url + "/anthropic", max_retries=0, timeout=20.0, **kw)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def last_post(stack: Stack, provider: str) -> dict:
    reqs = [r for r in stack.mocks[provider].requests() if r["method"] == "POST"]
    assert reqs, f"the {provider} mock saw no request"
    return reqs[-1]


# ---------------------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_chat_on_every_upstream(stack: Stack, provider: str):
    raw = client(stack).messages.with_raw_response.create(
        model=CHAT[provider], max_tokens=64, messages=user("hello there"), metadata={"user_id": "u-7"}
    )
    msg = raw.parse()
    assert isinstance(msg, anthropic.types.Message)
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "echo: hello there"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens == 2 and msg.usage.output_tokens == 3
    assert raw.headers["x-switchyard-provider"] == provider
    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    assert last_post(stack, provider)["path"] == UPSTREAM_PATH[provider]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_system_prompt_reaches_the_upstream(stack: Stack, provider: str):
    msg = client(stack).messages.create(
        model=CHAT[provider],
        max_tokens=64,
        system=[{"type": "text", "text": "Be very terse.", "cache_control": {"type": "ephemeral"}}],
        messages=user("hi"),
    )
    assert msg.content[0].text == "echo: hi"
    # The mock counts the system prompt's words in the prompt: 3 + 1.
    assert msg.usage.input_tokens == 4
    body = last_post(stack, provider)["body"]
    if provider == "anthropic":
        assert body["system"] == "Be very terse."
    else:
        assert body["messages"][0] == {"role": "system", "content": "Be very terse."}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_max_tokens_and_stop_sequences(stack: Stack, provider: str):
    c = client(stack)
    cut = c.messages.create(model=CHAT[provider], max_tokens=2, messages=user("one two three four"))
    assert (cut.content[0].text, cut.stop_reason) == ("echo: one", "max_tokens")
    stopped = c.messages.create(model=CHAT[provider], max_tokens=50, messages=user("alpha beta gamma"), stop_sequences=["gamma"])
    assert stopped.content[0].text == "echo: alpha beta "
    if provider == "anthropic":
        # Only Anthropic says which sequence matched; the others stop the same way, as `end_turn`.
        assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "gamma")
    else:
        assert (stopped.stop_reason, stopped.stop_sequence) == ("end_turn", None)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_streaming_with_the_stream_helper(stack: Stack, provider: str):
    with client(stack).messages.stream(model=CHAT[provider], max_tokens=64, messages=user("stream me please")) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "echo: stream me please"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 4)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_streaming_raw_events(stack: Stack, provider: str):
    events = list(client(stack).messages.create(model=CHAT[provider], max_tokens=64, messages=user("a b"), stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[1:-2] == ["content_block_start"] + ["content_block_delta"] * (kinds.count("content_block_delta")) + ["content_block_stop"]
    deltas = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert deltas == "echo: a b"
    assert events[-2].delta.stop_reason == "end_turn"
    assert events[-2].usage.output_tokens == 3


# ---------------------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_use_and_tool_result_round_trip(stack: Stack, provider: str):
    c = client(stack)
    ask = user('weather please [[tool:get_weather {"city": "Paris"}]]')
    first = c.messages.create(model=CHAT[provider], max_tokens=64, tools=[WEATHER, TIME], messages=ask)
    # The one thing Claude Code cannot do without: a tool call is `tool_use`, whatever the upstream said.
    assert first.stop_reason == "tool_use", provider
    calls = [b for b in first.content if b.type == "tool_use"]
    assert [(b.name, b.input) for b in calls] == [("get_weather", {"city": "Paris"})]
    assert calls[0].id
    follow = ask + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "18C and sunny"}]},
    ]
    second = c.messages.create(model=CHAT[provider], max_tokens=64, tools=[WEATHER, TIME], messages=follow)
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "tool results: 18C and sunny"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_result_error_flag_reaches_the_model(stack: Stack, provider: str):
    c = client(stack)
    ask = user("[[tool:get_time]]")
    first = c.messages.create(model=CHAT[provider], max_tokens=64, tools=[TIME], messages=ask)
    call = next(b for b in first.content if b.type == "tool_use")
    follow = ask + [
        {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": [{"type": "text", "text": "no clock"}], "is_error": True}]},
    ]
    second = c.messages.create(model=CHAT[provider], max_tokens=64, tools=[TIME], messages=follow)
    assert second.content[0].text == "tool results: Error: no clock"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_streamed_tool_use(stack: Stack, provider: str):
    ask = user('[[tool:get_weather {"city": "Oslo"}]] [[tool:get_time {"tz": "UTC"}]]')
    with client(stack).messages.stream(model=CHAT[provider], max_tokens=64, tools=[WEATHER, TIME], messages=ask) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use", provider
    assert [(b.name, b.input) for b in final.content if b.type == "tool_use"] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_time", {"tz": "UTC"}),
    ]


@pytest.mark.parametrize("streamed", [False, True])
def test_thinking_with_tools_sends_the_signed_thinking_back(stack: Stack, streamed: bool):
    # With thinking on, Anthropic refuses a tool loop whose last assistant turn does not start with its own
    # signed thinking (the mock too): the signature must survive the gateway both ways, streamed or not.
    c = client(stack)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    ask = user('weather please [[tool:get_weather {"city": "Paris"}]]')
    kw: dict[str, Any] = {"model": CHAT["anthropic"], "max_tokens": 2048, "tools": [WEATHER], "thinking": thinking}
    if streamed:
        with c.messages.stream(messages=ask, **kw) as s:
            first = s.get_final_message()
    else:
        first = c.messages.create(messages=ask, **kw)
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    assert first.content[0].signature.startswith("mocksig_")
    assert first.content[0].thinking == "The user needs get_weather; I will call it."
    call = first.content[1]
    follow = ask + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}]},
    ]
    second = c.messages.create(messages=follow, **kw)
    assert [b.type for b in second.content] == ["thinking", "text"]
    assert second.content[1].text == "tool results: 18C"
    sent = last_post(stack, "anthropic")["body"]["messages"][1]["content"]
    assert sent[0] == {"type": "thinking", "thinking": first.content[0].thinking, "signature": first.content[0].signature}
    # Without its thinking the same turn is refused, as Anthropic refuses it.
    bare = ask + [{"role": "assistant", "content": [call.model_dump(exclude_none=True)]}, follow[-1]]
    with pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(messages=bare, **kw)
    assert "must start with a thinking block" in str(e.value)


def test_forced_tool_choice(stack: Stack):
    for provider in ("openai", "anthropic"):
        msg = client(stack).messages.create(
            model=CHAT[provider], max_tokens=64, tools=[WEATHER, TIME], tool_choice={"type": "tool", "name": "get_time"}, messages=user("hm")
        )
        assert msg.stop_reason == "tool_use"
        assert [(b.name, b.input) for b in msg.content] == [("get_time", {})], provider


# ---------------------------------------------------------------------------------------------------------
# Images and documents
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_base64_image(stack: Stack, provider: str, png_bytes: bytes):
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png_bytes).decode()}},
    ]
    msg = client(stack).messages.create(model=IMAGE_MODEL[provider], max_tokens=64, messages=[{"role": "user", "content": content}])
    assert msg.content[0].text == "echo: what is this" + image_note(png_bytes)


def test_url_image_is_fetched_for_ollama(stack: Stack, image_server):
    content = [{"type": "text", "text": "and this"}, {"type": "image", "source": {"type": "url", "url": image_server.url + "/pixel.png"}}]
    msg = client(stack).messages.create(model=IMAGE_MODEL["local"], max_tokens=64, messages=[{"role": "user", "content": content}])
    assert msg.content[0].text == "echo: and this" + image_note(image_server.png)
    msg = client(stack).messages.create(model=CHAT["anthropic"], max_tokens=64, messages=[{"role": "user", "content": content}])
    assert msg.content[0].text == f"echo: and this [image-url {image_server.url}/pixel.png]"


PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def doc_note(data: bytes, media_type: str) -> str:
    return f" [document {media_type} {len(data)} bytes sha256={hashlib.sha256(data).hexdigest()[:16]}]"


def test_documents_reach_anthropic_and_are_refused_by_ollama(stack: Stack):
    content = [
        {"type": "text", "text": "summarise"},
        {"type": "document", "title": "r.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(PDF).decode()}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}},
    ]
    msg = client(stack).messages.create(model=CHAT["anthropic"], max_tokens=64, messages=[{"role": "user", "content": content}])
    assert msg.content[0].text == "echo: summarise" + doc_note(PDF, "application/pdf") + doc_note(b"plain words", "text/plain")
    with pytest.raises(anthropic.BadRequestError) as e:
        client(stack).messages.create(model=CHAT["local"], max_tokens=64, messages=[{"role": "user", "content": content}])
    assert e.value.type == "invalid_request_error"
    assert "file" in e.value.message


def test_openai_file_parts_become_anthropic_documents(stack: Stack):
    parts = [
        {"type": "text", "text": "read"},
        {"type": "file", "file": {"file_data": data_url(PDF, "application/pdf"), "filename": "r.pdf"}},
    ]
    r = stack.client().chat.completions.create(model=CHAT["anthropic"], messages=[{"role": "user", "content": parts}])
    assert r.choices[0].message.content == "echo: read" + doc_note(PDF, "application/pdf")
    sent = last_post(stack, "anthropic")["body"]["messages"][0]["content"][1]
    assert sent == {"type": "document", "title": "r.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(PDF).decode()}}
    with pytest.raises(openai.BadRequestError) as e:
        stack.client().chat.completions.create(model=CHAT["local"], messages=[{"role": "user", "content": parts}])
    assert e.value.code == "unsupported_by_provider"
    assert 'does not accept "file" content parts' in str(e.value)


# ---------------------------------------------------------------------------------------------------------
# Errors, in Anthropic's shape and the SDK's own exception classes
# ---------------------------------------------------------------------------------------------------------


def test_unknown_model_is_not_found(stack: Stack):
    with pytest.raises(anthropic.NotFoundError) as e:
        client(stack).messages.create(model="nosuch/model-x", max_tokens=10, messages=user("hi"))
    assert e.value.status_code == 404 and e.value.type == "not_found_error"
    assert e.value.request_id and e.value.body["request_id"] == e.value.request_id


def test_bad_requests_are_bad_request_errors(stack: Stack):
    c = client(stack)
    with pytest.raises(anthropic.BadRequestError) as e:
        # This SDK's `create` has no `temperature` keyword any more; older clients still send it.
        c.messages.create(model=CHAT["openai"], max_tokens=10, messages=user("hi"), extra_body={"temperature": 1.5})
    assert e.value.type == "invalid_request_error" and "temperature" in e.value.message
    with pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(model=CHAT["openai"], max_tokens=10, messages=[{"role": "user", "content": [{"type": "text"}]}])
    assert "messages.0.content.0.text" in e.value.message
    # max_tokens is required, as Anthropic has it (the SDK insists too, so this goes raw).
    status, body = http_json("POST", stack.url + "/anthropic/v1/messages", {"model": CHAT["openai"], "messages": user("hi")})
    assert status == 400 and body["type"] == "error"
    assert body["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}
    status, body = http_json("POST", stack.url + "/anthropic/v1/messages", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = http_json("GET", stack.url + "/anthropic/v1/nothing-here")
    assert status == 404 and body["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_upstream_refusals_keep_their_status(stack: Stack, provider: str):
    with pytest.raises(anthropic.BadRequestError):
        client(stack).messages.create(model=CHAT[provider], max_tokens=10, messages=user("[[error:400]]"))


def test_rate_limits_and_overload(fresh: Stack):
    with pytest.raises(anthropic.RateLimitError) as e:
        client(fresh).messages.create(model="limited/claude-haiku-4-5+fault=1+code=429", max_tokens=10, messages=user("hi"), extra_body={"fallbacks": []})
    assert e.value.type == "rate_limit_error"
    assert e.value.response.headers.get("retry-after")
    with pytest.raises(anthropic.InternalServerError) as e:
        client(fresh).messages.create(model="flaky/gpt-4o", max_tokens=10, messages=user("hi"))
    assert e.value.status_code in (502, 503)


def test_mid_stream_error_is_an_error_event(fresh: Stack):
    with pytest.raises(anthropic.APIStatusError) as e:
        with client(fresh).messages.stream(model=CHAT["openai"] + "+kind=late_stream_error", max_tokens=64, messages=user("x y z")) as s:
            for _ in s:
                pass
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] in ("api_error", "overloaded_error")


# ---------------------------------------------------------------------------------------------------------
# Fallbacks, virtual keys, token counting, models
# ---------------------------------------------------------------------------------------------------------


def test_fallback_and_attribution_headers(fresh: Stack):
    raw = client(fresh).messages.with_raw_response.create(model="flaky/gpt-4o-mini", max_tokens=64, messages=user("fall back"))
    msg = raw.parse()
    assert msg.content[0].text == "echo: fall back"
    assert raw.headers["x-switchyard-provider"] == "openai"
    assert raw.headers["x-switchyard-fallback-index"] == "1"
    # The request body's own fallbacks (the gateway extension) work here too.
    raw = client(fresh).messages.with_raw_response.create(
        model="flaky/gpt-4o", max_tokens=64, messages=user("again"), extra_body={"fallbacks": ["anthropic/claude-sonnet-4-6"]}
    )
    assert raw.headers["x-switchyard-provider"] == "anthropic"
    assert raw.parse().content[0].text == "echo: again"


VK = "sk-vk-claude-code-test"


@pytest.fixture(scope="module")
def keyed(procs: Procs, mocks, provider_pins) -> Iterator[Stack]:
    config = stack_config(mocks, provider_pins)
    config["governance"] = {
        "virtual_keys": [
            {"id": "vk-claude", "name": "claude-code", "value": VK, "provider_configs": [{"provider": "openai", "allowed_models": ["gpt-4o-mini"]}]}
        ]
    }
    gw = procs.gateway(config, name="gateway-keyed")
    try:
        yield Stack(gw, mocks)
    finally:
        procs.stop(gw.proc)


def test_virtual_keys_by_x_api_key_and_bearer(keyed: Stack):
    # The SDK sends its key as `Authorization: Bearer`; Claude Code and curl users send `x-api-key`.
    msg = client(keyed, api_key=VK).messages.create(model=CHAT["openai"], max_tokens=10, messages=user("keyed"))
    assert msg.content[0].text == "echo: keyed"
    body = {"model": CHAT["openai"], "max_tokens": 10, "messages": user("raw")}
    status, data = http_json("POST", keyed.url + "/anthropic/v1/messages", body, {"x-api-key": VK, "anthropic-version": "2023-06-01"})
    assert status == 200 and data["content"][0]["text"] == "echo: raw"
    with pytest.raises(anthropic.AuthenticationError) as e:
        client(keyed, api_key="sk-wrong").messages.create(model=CHAT["openai"], max_tokens=10, messages=user("x"))
    assert e.value.type == "authentication_error"
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        client(keyed, api_key=VK).messages.create(model=CHAT["anthropic"], max_tokens=10, messages=user("x"))
    assert e.value.type == "permission_error"
    models = client(keyed, api_key=VK).models.list()
    assert [m.id for m in models] == ["openai/gpt-4o-mini"]


def test_count_tokens(stack: Stack):
    c = client(stack)
    small = c.messages.count_tokens(model=CHAT["openai"], messages=user("hi"))
    big = c.messages.count_tokens(model=CHAT["anthropic"], system="A long system prompt " * 20, messages=user("hi"), tools=[WEATHER])
    assert 0 < small.input_tokens < big.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        c.messages.count_tokens(model="nosuch/model", messages=user("hi"))


def test_models_list_and_paging(stack: Stack):
    c = client(stack)
    ids = [m.id for m in c.models.list(limit=2)]  # the SDK follows `has_more` / `last_id` page by page
    assert CHAT["openai"] in ids and CHAT["anthropic"] in ids
    assert len(ids) == len(set(ids))
    page = c.models.list(limit=1)
    assert len(page.data) == 1 and page.has_more and page.first_id == page.last_id == page.data[0].id
    m = c.models.retrieve(CHAT["openai"])
    assert (m.id, m.type) == (CHAT["openai"], "model")


# ---------------------------------------------------------------------------------------------------------
# Structured output on the Anthropic codec, through the OpenAI SDK
# ---------------------------------------------------------------------------------------------------------


class Answer(pydantic.BaseModel):
    text: str
    words: int


def test_structured_output_parse_over_anthropic(stack: Stack):
    r = stack.client().chat.completions.parse(model=CHAT["anthropic"], messages=user("name three colours"), response_format=Answer)
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None or choice.message.tool_calls == []
    assert choice.message.parsed == Answer(text="name three colours", words=3)
    sent = last_post(stack, "anthropic")["body"]
    assert sent["tool_choice"] == {"type": "tool", "name": "switchyard_structured_output"}
    assert sent["tools"][0]["input_schema"]["properties"]["words"]["type"] == "integer"


def test_structured_output_streams_as_content(stack: Stack):
    stream = stack.client().chat.completions.create(
        model=CHAT["anthropic"],
        messages=user("two words"),
        response_format={"type": "json_schema", "json_schema": {"name": "Answer", "schema": Answer.model_json_schema()}},
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"text": "two words", "words": 2}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)


@pytest.mark.parametrize("provider", ["openai", "local"])
def test_json_schema_on_other_upstreams(stack: Stack, provider: str):
    r = stack.client().chat.completions.create(
        model=CHAT[provider],
        messages=user("be json"),
        response_format={"type": "json_schema", "json_schema": {"name": "E", "schema": {"type": "object", "properties": {"echo": {"type": "string"}}}}},
    )
    assert json.loads(r.choices[0].message.content) == {"echo": "be json"}


def test_structured_output_on_the_anthropic_route(stack: Stack):
    """`output_config.format` from an Anthropic client, served by OpenAI and by Anthropic."""
    fmt = {"format": {"type": "json_schema", "schema": {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}}}
    via_openai = client(stack).messages.create(model=CHAT["openai"], max_tokens=64, messages=user("shape it"), output_config=fmt)
    assert json.loads(via_openai.content[0].text) == {"echo": "shape it"}
    via_anthropic = client(stack).messages.create(model=CHAT["anthropic"], max_tokens=64, messages=user("shape it"), output_config=fmt)
    assert json.loads(via_anthropic.content[0].text) == {"echo": "shape it"}
    assert via_anthropic.stop_reason == "end_turn"
