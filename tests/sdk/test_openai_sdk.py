"""The gateway as an OpenAI-compatible endpoint, driven by the official `openai` Python SDK (and curl).

Behind one `switchyard serve` (see conftest.py's `stack`) sit four mock upstreams of different wire formats:
`openai` (OpenAI), `anthropic` (Anthropic Messages), `azure` (Azure OpenAI deployments) and `local` (Ollama
native), plus two that always fail: `flaky` (OpenAI format, 529) and `limited` (Anthropic format, 429), and
`slow`, the OpenAI mock again with sub-second timeouts (slowness is asked for by model-name suffixes). The
mocks answer deterministically (crates/mock/src/lib.rs): `echo: <last user text>`, image notes, and
directives such as `[[tool:NAME {json}]]` and `[[error:STATUS]]`, so every assertion here is exact.

The SDK's own retries are off (`max_retries=0`), so attempt counts are the gateway's alone.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from conftest import BIN, Procs, Stack, data_url, http_json, image_note

# One chat model per provider type behind the gateway.
CHAT = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-sonnet-4-6",
    "azure": "azure/gpt-4o-mini",
    "local": "local/llama3.2:latest",
}
# Where each provider's chat request must land on its mock.
UPSTREAM_PATH = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "azure": "/openai/deployments/gpt-4o-mini/chat/completions",
    "local": "/api/chat",
}
PROVIDERS = list(CHAT)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}},
}
TOOLS = [WEATHER, TIME]
WEATHER_ARGS = {"city": "Paris", "unit": "C", "days": [1, 2], "detail": {"wind": True, "note": "a b"}}
TIME_ARGS = {"tz": "Europe/Paris"}
TWO_CALLS = f"plan: [[tool:get_weather {json.dumps(WEATHER_ARGS)}]] then [[tool:get_time {json.dumps(TIME_ARGS)}]]"


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def last_request(stack: Stack, provider: str) -> dict:
    """The last POST the provider's mock received (model-list GETs from the gateway's refresher are skipped)."""
    reqs = [r for r in stack.mocks[provider].requests() if r["method"] == "POST"]
    assert reqs, f"the {provider} mock saw no request"
    return reqs[-1]


def chat_posts(stack: Stack, provider: str) -> int:
    """Chat requests the provider's mock has received so far (a new gateway's model-list GETs not counted)."""
    return stack.mocks[provider].stats()["by_path"].get(UPSTREAM_PATH.get(provider, "/v1/chat/completions"), 0)


# ---------------------------------------------------------------------------------------------------------
# Plain chat, system prompt, headers
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_plain_chat(stack: Stack, provider: str):
    client = stack.client()
    raw = client.chat.completions.with_raw_response.create(model=CHAT[provider], messages=user("hello there"))
    r = raw.parse()
    assert r.object == "chat.completion"
    assert r.model == CHAT[provider].split("/", 1)[1]
    assert len(r.choices) == 1
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "echo: hello there"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (2, 3, 5)

    assert raw.headers["x-switchyard-provider"] == provider
    assert raw.headers["x-switchyard-model"] == r.model
    assert raw.headers["x-switchyard-attempts"] == "1"
    assert raw.headers["x-switchyard-fallback-index"] == "0"
    assert raw.headers.get("x-switchyard-key") == {"openai": "main", "anthropic": "key-1", "azure": "key-1", "local": None}[provider]

    seen = last_request(stack, provider)
    assert seen["path"] == UPSTREAM_PATH[provider]
    # Each upstream gets its own credential in its own header; keyless Ollama gets none.
    assert seen["key"] == {"openai": "sk-openai-test", "anthropic": "sk-ant-test", "azure": "azure-test-key", "local": None}[provider]
    assert "anything" not in json.dumps(seen["headers"]), "the caller's key must not be forwarded upstream"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_system_prompt(stack: Stack, provider: str):
    r = stack.client().chat.completions.create(
        model=CHAT[provider],
        messages=[{"role": "system", "content": "be brief and kind"}, {"role": "user", "content": "hello there"}],
    )
    assert r.choices[0].message.content == "echo: hello there"
    # The mock counts the system prompt's words as prompt tokens: it arrived as a system prompt.
    assert r.usage.prompt_tokens == 4 + 2
    body = last_request(stack, provider)["body"]
    if provider == "anthropic":
        system = body["system"]
        text = system if isinstance(system, str) else " ".join(b["text"] for b in system)
        assert text == "be brief and kind"
        assert all(m["role"] != "system" for m in body["messages"])
    else:
        assert body["messages"][0]["role"] == "system"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_developer_role_is_a_system_prompt(stack: Stack, provider: str):
    r = stack.client().chat.completions.create(
        model=CHAT[provider],
        messages=[{"role": "developer", "content": "answer in French"}, {"role": "user", "content": "bonjour"}],
    )
    assert r.choices[0].message.content == "echo: bonjour"
    assert r.usage.prompt_tokens == 3 + 1


def test_unicode_round_trip(stack: Stack):
    text = "héllo 世界 🎉 naïve café — ok"
    for provider in PROVIDERS:
        r = stack.client().chat.completions.create(model=CHAT[provider], messages=user(text))
        assert r.choices[0].message.content == "echo: " + text, provider
        chunks = stack.client().chat.completions.create(model=CHAT[provider], messages=user(text), stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: " + text, provider


def test_multi_turn_echoes_the_last_user_message(stack: Stack):
    for provider in PROVIDERS:
        r = stack.client().chat.completions.create(
            model=CHAT[provider],
            messages=[
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "second question"},
            ],
        )
        assert r.choices[0].message.content == "echo: second question", provider
        assert r.usage.prompt_tokens == 6, provider


def test_openai_prefix_alias(stack: Stack):
    import openai as sdk

    client = sdk.OpenAI(base_url=stack.url + "/openai/v1", api_key="anything", max_retries=0)
    r = client.chat.completions.create(model=CHAT["openai"], messages=user("via alias"))
    assert r.choices[0].message.content == "echo: via alias"


def test_max_tokens_and_stop(stack: Stack):
    for provider in PROVIDERS:
        r = stack.client().chat.completions.create(model=CHAT[provider], messages=user("a b c d e"), max_tokens=3)
        assert r.choices[0].message.content == "echo: a b", provider
        assert r.choices[0].finish_reason == "length", provider
        r = stack.client().chat.completions.create(model=CHAT[provider], messages=user("one two STOP three"), stop=["STOP"])
        assert r.choices[0].message.content == "echo: one two ", provider
        assert r.choices[0].finish_reason == "stop", provider


# ---------------------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_text_without_usage(stack: Stack, provider: str):
    stream = stack.client().chat.completions.create(model=CHAT[provider], messages=user("hello big world"), stream=True)
    chunks = list(stream)
    assert len(chunks) >= 3
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1, "every chunk of one stream carries the same id"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello big world"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert all(c.usage is None for c in chunks), "usage was not asked for"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_with_usage(stack: Stack, provider: str):
    raw = stack.client().chat.completions.with_raw_response.create(
        model=CHAT[provider],
        messages=user("hello big world"),
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-switchyard-provider"] == provider
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello big world"
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1], "one final usage chunk"
    final = chunks[-1]
    assert final.choices == []
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.total_tokens) == (3, 4, 7)


def test_concurrent_streams_stay_apart(stack: Stack):
    # Long streams from every provider at once: each client gets exactly its own text, in order.
    from concurrent.futures import ThreadPoolExecutor

    words = " ".join(f"w{i}" for i in range(300))

    def one(i: int) -> tuple[str, str, int]:
        model = CHAT[PROVIDERS[i % len(PROVIDERS)]]
        stream = stack.client().chat.completions.create(
            model=model, messages=user(f"req{i} {words}"), stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, f"echo: req{i} {words}", chunks[-1].usage.completion_tokens

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(16)))
    for got, expected, completion_tokens in results:
        assert got == expected
        assert completion_tokens == len(expected.split())


def test_stream_raw_sse_frames_with_curl(stack: Stack):
    body = json.dumps({"model": CHAT["anthropic"], "stream": True, "messages": user("frames please")})
    out = subprocess.run(
        ["curl", "-sN", "--max-time", "20", "-H", "content-type: application/json", "-d", body, stack.url + "/v1/chat/completions"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "\r" not in out
    frames = [f for f in out.split("\n\n") if f.strip()]
    assert all(f.startswith("data: ") for f in frames), out
    assert frames[-1] == "data: [DONE]"
    events = [json.loads(f[len("data: ") :]) for f in frames[:-1]]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) == "echo: frames please"
    assert out.endswith("data: [DONE]\n\n")


# ---------------------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tools_two_parallel_calls(stack: Stack, provider: str):
    r = stack.client().chat.completions.create(model=CHAT[provider], messages=user(TWO_CALLS), tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content
    calls = choice.message.tool_calls
    assert [c.type for c in calls] == ["function", "function"]
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].function.arguments) == WEATHER_ARGS
    assert json.loads(calls[1].function.arguments) == TIME_ARGS
    assert all(c.id for c in calls) and calls[0].id != calls[1].id
    # The tool definitions reached the upstream in its own format.
    body = json.dumps(last_request(stack, provider)["body"])
    assert "get_weather" in body and "get_time" in body


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tools_stream_reassembled_by_index(stack: Stack, provider: str):
    stream = stack.client().chat.completions.create(
        model=CHAT[provider],
        messages=user(TWO_CALLS),
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict] = {}
    finishes = []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    assert slot["id"] is None, "a call's id is sent once"
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
    assert finishes == ["tool_calls"]
    assert sorted(calls) == [0, 1]
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == WEATHER_ARGS
    assert json.loads(calls[1]["arguments"]) == TIME_ARGS
    assert calls[0]["id"] and calls[1]["id"] and calls[0]["id"] != calls[1]["id"]
    assert usage is not None and usage.completion_tokens == 10  # the mock counts 5 per tool call


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_result_round_trip(stack: Stack, provider: str):
    client = stack.client()
    messages = user(TWO_CALLS)
    first = client.chat.completions.create(model=CHAT[provider], messages=messages, tools=TOOLS)
    msg = first.choices[0].message
    assert len(msg.tool_calls) == 2
    follow = messages + [
        msg.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "18C and sunny"},
        {"role": "tool", "tool_call_id": msg.tool_calls[1].id, "content": "noon"},
    ]
    second = client.chat.completions.create(model=CHAT[provider], messages=follow, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "tool results: 18C and sunny | noon"


def test_forced_tool_choice(stack: Stack):
    for provider in ("openai", "anthropic", "azure"):
        r = stack.client().chat.completions.create(
            model=CHAT[provider],
            messages=user("no directive here"),
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        )
        calls = r.choices[0].message.tool_calls
        assert [c.function.name for c in calls] == ["get_time"], provider
        assert json.loads(calls[0].function.arguments) == {}, provider


# ---------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------


def image_message(text: str, url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]}]


IMAGE_MODEL = {**CHAT, "local": "local/llava:latest"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_image_as_base64_data_url(stack: Stack, png_bytes: bytes, provider: str):
    r = stack.client().chat.completions.create(
        model=IMAGE_MODEL[provider], messages=image_message("what is this?", data_url(png_bytes))
    )
    assert r.choices[0].message.content == "echo: what is this?" + image_note(png_bytes)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_image_by_http_url(stack: Stack, image_server, provider: str):
    url = f"{image_server.url}/pixel.png?provider={provider}"
    r = stack.client().chat.completions.create(model=IMAGE_MODEL[provider], messages=image_message("and this?", url))
    text = r.choices[0].message.content
    if provider == "local":
        # Ollama takes bytes only: the gateway fetched the URL (loopback is allow-listed) and inlined it.
        assert text == "echo: and this?" + image_note(image_server.png)
        assert f"/pixel.png?provider={provider}" in image_server.hits
    else:
        # The others take URLs: passed through untouched, never fetched by the gateway.
        assert text == f"echo: and this? [image-url {url}]"
        assert f"/pixel.png?provider={provider}" not in image_server.hits


def test_image_url_fetch_failure_is_a_400(stack: Stack, image_server):
    with pytest.raises(openai.BadRequestError) as e:
        stack.client().chat.completions.create(
            model=IMAGE_MODEL["local"], messages=image_message("gone", f"{image_server.url}/missing.png")
        )
    assert e.value.status_code == 400
    assert e.value.code == "image_fetch_failed"


# ---------------------------------------------------------------------------------------------------------
# Embeddings and models
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "provider,model", [("openai", "openai/text-embedding-3-small"), ("local", "local/all-minilm:latest"), ("azure", "azure/text-embedding-3-small")]
)
def test_embeddings(stack: Stack, provider: str, model: str):
    client = stack.client()
    # The SDK asks for base64 by default and decodes it; `float` must give the same vectors.
    raw = client.embeddings.with_raw_response.create(model=model, input=["hello world", "x"])
    default = raw.parse()
    floats = client.embeddings.create(model=model, input=["hello world", "x"], encoding_format="float")
    assert raw.headers["x-switchyard-provider"] == provider
    assert default.object == "list"
    assert [d.index for d in default.data] == [0, 1]
    assert all(len(d.embedding) > 0 for d in default.data)
    for a, b in zip(default.data, floats.data):
        assert len(a.embedding) == len(b.embedding)
        assert all(abs(x - y) < 1e-6 for x, y in zip(a.embedding, b.embedding))
    assert default.data[0].embedding != default.data[1].embedding
    again = client.embeddings.create(model=model, input="hello world", encoding_format="float")
    assert again.data[0].embedding == floats.data[0].embedding, "embeddings are deterministic"
    assert default.usage.prompt_tokens == 3


def test_embeddings_fallback(fresh: Stack):
    raw = fresh.client().embeddings.with_raw_response.create(
        model="flaky/text-embedding-3-small", input="x", extra_body={"fallbacks": ["local/all-minilm:latest"]}
    )
    assert raw.headers["x-switchyard-provider"] == "local"
    assert raw.headers["x-switchyard-attempts"] == "2"
    assert len(raw.parse().data) == 1


def test_embeddings_on_a_provider_without_them_is_a_400(stack: Stack):
    with pytest.raises(openai.BadRequestError) as e:
        stack.client().embeddings.create(model="anthropic/claude-sonnet-4-6", input="x")
    assert e.value.status_code == 400


def test_models_list(stack: Stack):
    ids = {m.id for m in stack.client().models.list()}
    for expected in [
        "openai/gpt-4o-mini",
        "openai/text-embedding-3-small",
        "anthropic/claude-sonnet-4-6",
        "anthropic/claude-haiku-4-5",
        "local/llava:latest",
        "local/llama3.2:latest",
        "azure/my-mini",
        "azure/gpt-4o-mini",
    ]:
        assert expected in ids, f"{expected} missing from {sorted(ids)}"
    assert all("/" in i for i in ids)


def test_azure_deployment_map(stack: Stack):
    raw = stack.client().chat.completions.with_raw_response.create(model="azure/my-mini", messages=user("mapped"))
    assert raw.parse().choices[0].message.content == "echo: mapped"
    seen = last_request(stack, "azure")
    assert seen["path"] == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert "api-version=" in (seen["query"] or "")


def test_bare_model_names(stack: Stack):
    client = stack.client()
    client.models.list()  # makes sure the upstream model lists have been read
    raw = client.chat.completions.with_raw_response.create(model="llava:latest", messages=user("bare"))
    assert raw.headers["x-switchyard-provider"] == "local"
    assert raw.parse().choices[0].message.content == "echo: bare"
    # gpt-4o-mini is served by two providers (openai lists it, azure's config names it): the caller must choose.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=user("which one?"))
    assert e.value.code == "ambiguous_model"
    assert "openai/gpt-4o-mini" in e.value.message and "azure/gpt-4o-mini" in e.value.message


# ---------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------


def test_bad_requests_are_400s(stack: Stack):
    client = stack.client()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT["openai"], messages=[])
    assert (e.value.status_code, e.value.param, e.value.type) == (400, "messages", "invalid_request_error")
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT["openai"], messages=user("hot"), temperature=7)
    assert e.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT["openai"], messages="not a list")  # type: ignore[arg-type]
    assert e.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT["openai"], messages=user("x"), extra_body={"fallbacks": ["nobody/x"]})
    assert e.value.code == "invalid_fallback"


def test_unknown_models_are_404s(stack: Stack):
    client = stack.client()
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nobody/gpt-4o-mini", messages=user("x"))
    assert (e.value.status_code, e.value.code) == (404, "model_not_found")
    # A configured provider whose upstream does not know the model: its 404 comes through.
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="openai/gpt-nope", messages=user("x"))
    assert e.value.status_code == 404
    assert e.value.body["attempts"][0]["status"] == 404


@pytest.mark.parametrize(
    "provider,directive,status,code,kind",
    [
        # The status tells the caller what to do: wait (429), try later (503), or it broke (502).
        ("openai", "[[error:429]]", 429, "rate_limit_exceeded", "rate_limit_error"),
        ("anthropic", "[[error:529]]", 503, "upstream_unavailable", "upstream_error"),
        ("azure", "[[error:503]]", 503, "upstream_unavailable", "upstream_error"),
        ("local", "[[error:500]]", 502, "all_attempts_failed", "upstream_error"),
        ("openai", "[[error:502]]", 502, "all_attempts_failed", "upstream_error"),
    ],
)
def test_upstream_failures_without_fallback(fresh: Stack, provider: str, directive: str, status: int, code: str, kind: str):
    with pytest.raises(openai.APIStatusError) as e:
        fresh.client().chat.completions.create(model=CHAT[provider], messages=user(f"fail {directive}"))
    err = e.value
    assert err.status_code == status
    assert (err.type, err.code) == (kind, code)
    attempts = err.body["attempts"]
    # With the default policy a lone target is tried twice: a transient failure is retried once after a
    # backoff, and a rate limit whose reset is short (the mock's 429 says 1 s) is waited for once.
    assert len(attempts) == 2
    assert all(a["target"] == CHAT[provider] for a in attempts)
    assert all(a["status"] == int(directive.strip("[]").split(":")[1]) for a in attempts)
    assert err.response.headers["x-switchyard-attempts"] == str(len(attempts))
    if status == 429:
        assert isinstance(err, openai.RateLimitError)
        assert int(err.response.headers["retry-after-ms"]) > 0


def test_upstream_failure_on_a_stream_fails_before_it_starts(fresh: Stack):
    with pytest.raises(openai.APIStatusError) as e:
        fresh.client().chat.completions.create(model=CHAT["anthropic"], messages=user("[[error:529]]"), stream=True)
    assert (e.value.status_code, e.value.code) == (503, "upstream_unavailable")
    assert [a["status"] for a in e.value.body["attempts"]] == [529, 529]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_caller_faults_from_upstream_keep_their_status(stack: Stack, provider: str):
    client = stack.client()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT[provider], messages=user("[[error:400]]"))
    assert e.value.body["attempts"][0]["class"] == "caller_fault"
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model=CHAT[provider], messages=user("[[error:422]]"))


@pytest.mark.parametrize(
    "provider",
    [
        "openai",
        "azure",
        "anthropic",
        "local",
    ],
)
def test_context_length_error_has_openais_code(stack: Stack, provider: str):
    # OpenAI clients (and the frameworks on top of them) recognise this error by its code, whatever the upstream.
    with pytest.raises(openai.BadRequestError) as e:
        stack.client().chat.completions.create(model=CHAT[provider], messages=user("too long [[context]]"))
    assert e.value.body["attempts"][0]["class"] == "context_too_long"
    assert e.value.code == "context_length_exceeded"


def test_rate_limit_passes_retry_after(fresh: Stack):
    # The only key is limited for 7 s, longer than the gateway waits: the caller hears 429 at once, with the
    # provider's reset, so its own backoff can work.
    with pytest.raises(openai.RateLimitError) as e:
        fresh.client().chat.completions.create(model="limited/claude-sonnet-4-6", messages=user("x"))
    assert (e.value.status_code, e.value.code) == (429, "rate_limit_exceeded")
    assert e.value.response.headers.get("retry-after") == "7"
    assert 6000 <= int(e.value.response.headers["retry-after-ms"]) <= 7000
    assert [a["class"] for a in e.value.body["attempts"]] == ["rate_limited"]


def test_the_sdks_own_retry_succeeds_once_the_rate_limit_lifts(procs: Procs):
    # A provider of its own that rate-limits with a 4 s reset (past the gateway's 3 s wait): the gateway
    # answers 429 with retry-after, the SDK sleeps as told and retries, and by then the limit is gone.
    up = procs.mock("openai", "--fault-rate", "1.0", "--fault-codes", "429", "--retry-after", "4", name="mock-lifting-429")
    gw = procs.gateway(
        {"providers": {"solo": {"type": "openai", "base_url": up.url, "keys": [{"name": "solo", "value": "sk-solo"}]}}},
        name="gateway-lifting",
    )
    client = gw.client(max_retries=2, timeout=30.0)
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            raw = client.chat.completions.with_raw_response.create(model="solo/gpt-4o-mini", messages=user("patience"))
            result["raw"] = raw
        except Exception as exc:  # surfaced below
            result["error"] = exc

    def chat_posts() -> int:
        # The gateway's model-list refresh also reaches the mock (and is limited too); only chats count here.
        return up.stats()["by_path"].get("/v1/chat/completions", 0)

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 10
    while chat_posts() < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert chat_posts() == 1, up.stats()
    up.behave()
    t.join(30)
    assert "error" not in result, result.get("error")
    assert result["raw"].parse().choices[0].message.content == "echo: patience"
    assert chat_posts() == 2, "one 429, then the SDK's retry; the gateway did not hammer the limited key"


def test_content_filter(stack: Stack):
    r = stack.client().chat.completions.create(model=CHAT["openai"], messages=user("[[filter]]"))
    assert r.choices[0].finish_reason == "content_filter"
    assert not r.choices[0].message.content


# ---------------------------------------------------------------------------------------------------------
# Fallbacks
# ---------------------------------------------------------------------------------------------------------


def test_route_fallback(fresh: Stack):
    before = chat_posts(fresh, "flaky")
    raw = fresh.client().chat.completions.with_raw_response.create(model="flaky/gpt-4o-mini", messages=user("save me"))
    assert raw.parse().choices[0].message.content == "echo: save me"
    assert raw.headers["x-switchyard-provider"] == "openai"
    assert raw.headers["x-switchyard-model"] == "gpt-4o-mini"
    assert raw.headers["x-switchyard-attempts"] == "2"
    assert raw.headers["x-switchyard-fallback-index"] == "1"
    assert chat_posts(fresh, "flaky") == before + 1


def test_request_body_fallbacks(fresh: Stack):
    raw = fresh.client().chat.completions.with_raw_response.create(
        model="flaky/gpt-4o",
        messages=user("fall over"),
        extra_body={"fallbacks": ["anthropic/claude-haiku-4-5"]},
    )
    r = raw.parse()
    assert r.choices[0].message.content == "echo: fall over"
    assert r.model == "claude-haiku-4-5"
    assert raw.headers["x-switchyard-provider"] == "anthropic"
    assert raw.headers["x-switchyard-attempts"] == "2"


def test_fallback_chain_across_formats(fresh: Stack):
    # limited (Anthropic, 429) -> flaky (OpenAI, 529) -> local (Ollama): the third target serves.
    raw = fresh.client().chat.completions.with_raw_response.create(model="limited/claude-haiku-4-5", messages=user("third time"))
    assert raw.parse().choices[0].message.content == "echo: third time"
    assert raw.headers["x-switchyard-provider"] == "local"
    assert raw.headers["x-switchyard-attempts"] == "3"
    assert raw.headers["x-switchyard-fallback-index"] == "2"


def test_stream_fallback(fresh: Stack):
    raw = fresh.client().chat.completions.with_raw_response.create(
        model="flaky/gpt-4o-mini", messages=user("streamed rescue"), stream=True
    )
    assert raw.headers["x-switchyard-provider"] == "openai"
    assert raw.headers["x-switchyard-attempts"] == "2"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "echo: streamed rescue"


def test_every_fallback_failing_lists_every_attempt(fresh: Stack):
    with pytest.raises(openai.APIStatusError) as e:
        fresh.client().chat.completions.create(
            model="flaky/gpt-4o", messages=user("doomed"), extra_body={"fallbacks": ["limited/claude-sonnet-4-6"]}
        )
    # Every failure was an overload or a rate limit: unavailable, come back later.
    assert (e.value.status_code, e.value.code) == (503, "upstream_unavailable")
    assert e.value.response.headers.get("retry-after") == "7"
    attempts = e.value.body["attempts"]
    # Both targets once, then the default retry round for the one whose failure was transient (the
    # rate-limited key is not sent to before its reset).
    assert [(a["target"], a["status"]) for a in attempts] == [
        ("flaky/gpt-4o", 529),
        ("limited/claude-sonnet-4-6", 429),
        ("flaky/gpt-4o", 529),
    ]
    assert e.value.response.headers["x-switchyard-attempts"] == "3"
    assert "sk-flaky" not in e.value.response.text and "sk-limited" not in e.value.response.text


def test_caller_fault_does_not_fall_back(fresh: Stack):
    before = chat_posts(fresh, "anthropic")
    with pytest.raises(openai.BadRequestError):
        fresh.client().chat.completions.create(
            model=CHAT["openai"], messages=user("[[error:400]]"), extra_body={"fallbacks": ["anthropic/claude-haiku-4-5"]}
        )
    assert chat_posts(fresh, "anthropic") == before


def test_stream_error_before_the_first_chunk_falls_back(fresh: Stack):
    # The upstream answers 200 and then an error event: nothing has reached the client yet, so the next target
    # may still serve the stream.
    raw = fresh.client().chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini+kind=stream_error",
        messages=user("second chance"),
        stream=True,
        extra_body={"fallbacks": ["anthropic/claude-haiku-4-5"]},
    )
    assert raw.headers["x-switchyard-provider"] == "anthropic"
    assert raw.headers["x-switchyard-attempts"] == "2"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == "echo: second chance"


@pytest.mark.parametrize("kind", ["reset", "malformed"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_failure_after_the_first_chunk_is_an_error_event(fresh: Stack, provider: str, kind: str):
    # Once text has gone to the client the stream cannot move to another target: it must end with an error
    # the SDK raises, never a silent truncation that looks like a finished answer.
    stream = fresh.client().chat.completions.create(
        model=f"{CHAT[provider]}+kind={kind}",
        messages=user("one two three four five six"),
        stream=True,
        extra_body={"fallbacks": ["openai/gpt-4o"]},
    )
    text = ""
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            assert not (chunk.choices and chunk.choices[0].finish_reason), "a broken stream must not finish normally"
            text += "".join(c.delta.content or "" for c in chunk.choices)
    assert text.startswith("echo: ")
    assert "one two three four five six" not in text
    assert e.value.code == "stream_interrupted"


def test_upstream_timeout_is_a_504(fresh: Stack):
    with pytest.raises(openai.APIStatusError) as e:
        fresh.client().chat.completions.create(model="slow/gpt-4o-mini+kind=hang", messages=user("anyone?"))
    assert (e.value.status_code, e.value.code) == (504, "upstream_timeout")
    assert [a["class"] for a in e.value.body["attempts"]] == ["timeout", "timeout"]


def test_first_byte_timeout_falls_back(fresh: Stack):
    raw = fresh.client().chat.completions.with_raw_response.create(
        model="slow/gpt-4o-mini+ttft=2000",
        messages=user("too slow"),
        stream=True,
        extra_body={"fallbacks": ["local/llama3.2:latest"]},
    )
    assert raw.headers["x-switchyard-provider"] == "local"
    assert raw.headers["x-switchyard-attempts"] == "2"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == "echo: too slow"


def test_stream_idle_timeout_after_the_first_chunk(fresh: Stack):
    # 500 ms between chunks: the first text chunk arrives within the 800 ms first-byte timeout and commits
    # the stream; the next gap is longer than the 250 ms idle timeout (and the attempt's 1 s total ends it
    # in any case).
    stream = fresh.client().chat.completions.create(
        model="slow/gpt-4o-mini+chunk_delay=500", messages=user("a b c d e f"), stream=True
    )
    text = ""
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            text += "".join(c.delta.content or "" for c in chunk.choices)
    assert text.startswith("echo: ") and text != "echo: a b c d e f"
    assert e.value.code == "stream_interrupted"


# ---------------------------------------------------------------------------------------------------------
# Raw HTTP with curl: error shapes and the body limit
# ---------------------------------------------------------------------------------------------------------


def curl(url: str, *args: str, data: bytes | None = None) -> tuple[int, dict | str]:
    cmd = ["curl", "-s", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}", *args]
    if data is not None:
        cmd += ["--data-binary", "@-"]
    out = subprocess.run(cmd + [url], input=data, capture_output=True, timeout=30, check=True).stdout.decode()
    body, _, status = out.rpartition("\n")
    try:
        return int(status), json.loads(body)
    except ValueError:
        return int(status), body


def assert_openai_error(body, code: str | None = None) -> dict:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err), err
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


def test_malformed_json_is_a_400_with_the_openai_shape(stack: Stack):
    status, body = curl(
        stack.url + "/v1/chat/completions", "-H", "content-type: application/json", data=b'{"model": "openai/gpt-4o-mini", "messages": ['
    )
    assert status == 400
    err = assert_openai_error(body)
    assert err["type"] == "invalid_request_error"
    assert "JSON" in err["message"]

    status, body = curl(stack.url + "/v1/chat/completions", "-H", "content-type: application/json", data=b"")
    assert status == 400
    assert_openai_error(body)


def test_unknown_route_and_method(stack: Stack):
    status, body = curl(stack.url + "/v1/nope")
    assert status == 404
    assert_openai_error(body, "unknown_route")
    status, body = curl(stack.url + "/v1/chat/completions")  # GET
    assert status == 405
    assert_openai_error(body, "method_not_allowed")


@pytest.fixture(scope="module")
def small_gateway(procs: Procs, stack: Stack):
    """A second gateway with a 1 KiB body limit and no private networks allowed for image fetches."""
    return procs.gateway(
        {
            "server": {"max_body_size": "1KiB"},
            "providers": {"local": {"type": "ollama", "base_url": stack.mocks["local"].url}},
        },
        name="gateway-small",
    )


def test_body_over_the_limit_is_a_413(small_gateway):
    url = small_gateway.url + "/v1/chat/completions"
    small = json.dumps({"model": "local/llama3.2:latest", "messages": user("fits")}).encode()
    status, body = curl(url, "-H", "content-type: application/json", data=small)
    assert status == 200, body
    big = json.dumps({"model": "local/llama3.2:latest", "messages": user("x" * 2048)}).encode()
    status, body = curl(url, "-H", "content-type: application/json", data=big)
    assert status == 413
    assert_openai_error(body, "payload_too_large")
    # Without a Content-Length (chunked upload) the limit holds as the body streams in.
    status, body = curl(url, "-H", "content-type: application/json", "-H", "transfer-encoding: chunked", data=big)
    assert status == 413
    assert_openai_error(body, "payload_too_large")
    big_embed = json.dumps({"model": "local/all-minilm:latest", "input": "y" * 2048}).encode()
    status, body = curl(small_gateway.url + "/v1/embeddings", "-H", "content-type: application/json", data=big_embed)
    assert status == 413
    assert_openai_error(body, "payload_too_large")


def test_private_image_urls_are_refused_without_an_allow_list(small_gateway, image_server):
    client = small_gateway.client()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="local/llava:latest", messages=image_message("ssrf?", f"{image_server.url}/pixel.png?ssrf=1")
        )
    assert e.value.code == "image_fetch_failed"
    assert "/pixel.png?ssrf=1" not in image_server.hits


# ---------------------------------------------------------------------------------------------------------
# The CLI: check and --demo
# ---------------------------------------------------------------------------------------------------------


def run_check(config_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "switchyard.yaml"
    path.write_text(textwrap.dedent(config_text))
    from conftest import child_env

    return subprocess.run(
        [str(BIN), "check", "--config", str(path)], capture_output=True, text=True, timeout=30, env=child_env({"SY_TEST_KEY": "sk-x"})
    )


def test_check_accepts_a_good_config(switchyard_bin, tmp_path: Path):
    r = run_check(
        """
        listen: "127.0.0.1:9090"
        images:
          allow_private_networks: ["127.0.0.1/32"]
        providers:
          openai:
            keys:
              - {name: primary, value: env.SY_TEST_KEY, weight: 0.7}
              - {name: backup, value: sk-literal, weight: 0.3}
            timeout: 30s
          local:
            type: ollama
            base_url: "http://127.0.0.1:11434"
        routes:
          - models: ["openai/gpt-4o-mini"]
            fallbacks: ["local/llama3.2:latest"]
        """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert ": ok" in r.stdout
    assert "sk-x" not in r.stdout + r.stderr and "sk-literal" not in r.stdout + r.stderr


def test_check_lists_every_error(switchyard_bin, tmp_path: Path):
    r = run_check(
        """
        listen: "nowhere"
        server:
          max_body_size: lots
        images:
          allow_private_networks: ["not-a-net"]
        providers:
          openai:
            keys:
              - value: env.SY_TEST_MISSING_VAR
          groq:
            keys:
              - value: sk-x
                weight: -1
          mystery:
            base_url: "http://x"
          azure:
            keys: [{value: k}]
          anthropic:
            keys: [{value: k}]
            colour: blue
        routes:
          - models: ["openai/gpt-4o-mini"]
            fallbacks: ["nobody/model", "bare"]
        extra: 1
        """,
        tmp_path,
    )
    assert r.returncode != 0
    out = r.stdout + r.stderr
    for path in [
        "listen:",
        "server.max_body_size:",
        "images.allow_private_networks[0]:",
        "providers.openai.keys[0].value:",
        "providers.groq.keys[0].weight:",
        "providers.mystery.type:",
        "providers.azure.base_url:",
        "providers.anthropic.colour:",
        "routes[0].fallbacks[0]:",
        "routes[0].fallbacks[1]:",
        "extra:",
    ]:
        assert path in out, f"{path} missing from:\n{out}"
    assert "SY_TEST_MISSING_VAR" in out


def test_demo_mode_answers_without_keys(procs: Procs):
    gw = procs.gateway(None, "--demo", name="gateway-demo", env={"OLLAMA_HOST": "127.0.0.1:9"})
    client = gw.client()
    for model, provider in [("cloud/gpt-4o-mini", "cloud"), ("local/llava:latest", "local")]:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=user("demo time"))
        assert raw.parse().choices[0].message.content == "echo: demo time"
        assert raw.headers["x-switchyard-provider"] == provider
    chunks = list(client.chat.completions.create(model="local/llava:latest", messages=user("demo stream"), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: demo stream"
    ids = {m.id for m in client.models.list()}
    assert {"cloud/gpt-4o-mini", "local/llava:latest"} <= ids
    status, body = http_json("GET", gw.url + "/health")
    assert status == 200 and body == {"status": "ok"}
