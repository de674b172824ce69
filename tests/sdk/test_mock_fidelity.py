"""Fidelity of Switchyard's mock upstreams as seen by the official SDKs.

Why: the gateway's conformance and fault tests trust the mocks to speak each provider's wire format
exactly. If the official `openai` (OpenAI and AzureOpenAI clients), `anthropic` and `ollama` SDKs cannot
tell a mock from the real service, a test that passes against the mock means something.

The mock is started with `$SWITCHYARD_BIN mock --provider NAME --listen 127.0.0.1:0 --print-addr`, which
prints `listening on http://127.0.0.1:PORT` as its first stdout line. The deterministic reply rules are
documented in crates/mock/src/lib.rs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import select
import subprocess
import time
import urllib.request

import pytest

BIN = os.environ.get("SWITCHYARD_BIN")
pytestmark = pytest.mark.skipif(not BIN, reason="SWITCHYARD_BIN is not set")

PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def png_note() -> str:
    raw = base64.b64decode(PNG_B64)
    return f" [image image/png {len(raw)} bytes sha256={hashlib.sha256(raw).hexdigest()[:16]}]"


class Mock:
    """A running `switchyard mock` process."""

    def __init__(self, provider: str):
        assert BIN
        self.proc = subprocess.Popen(
            [BIN, "mock", "--provider", provider, "--listen", "127.0.0.1:0", "--print-addr"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        m = re.search(r"listening on (http://\S+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"mock did not start: {line!r}")
        self.url = m.group(1).rstrip("/")

    def admin(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def stats(self) -> dict:
        return self.admin("GET", "/mock/stats")

    def requests(self) -> list:
        return self.admin("GET", "/mock/requests")

    def behave(self, **kw) -> None:
        self.admin("PUT", "/mock/behavior", kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _mock(provider: str):
    m = Mock(provider)
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture()
def openai_mock():
    yield from _mock("openai")


@pytest.fixture()
def azure_mock():
    yield from _mock("azure")


@pytest.fixture()
def anthropic_mock():
    yield from _mock("anthropic")


@pytest.fixture()
def ollama_mock():
    yield from _mock("ollama")


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


# ---------------------------------------------------------------- OpenAI


def _openai(m: Mock, **kw):
    import openai

    return openai.OpenAI(base_url=m.url + "/v1", api_key="sk-test-key-0001", **{"max_retries": 0, **kw})


def test_openai_chat_and_image(openai_mock):
    c = _openai(openai_mock)
    r = c.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                ],
            },
        ],
    )
    expected = "echo: what is this?" + png_note() + " [image-url https://example.com/cat.png]"
    assert r.object == "chat.completion"
    assert r.model == "gpt-4o-mini"
    assert r.choices[0].message.content == expected
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == 5
    assert r.usage.completion_tokens == len(expected.split())
    assert r.usage.total_tokens == 5 + len(expected.split())
    assert openai_mock.stats()["by_key"] == {"sk-test-key-0001": 1}


def test_openai_stream_with_usage(openai_mock):
    c = _openai(openai_mock)
    stream = c.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hello big world"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "echo: hello big world"
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == 3
    assert chunks[-1].usage.completion_tokens == 4


def test_openai_tools_round_trip_and_stream_helper(openai_mock):
    c = _openai(openai_mock)
    prompt = 'check [[tool:get_weather {"city":"Paris"}]] [[tool:get_time]]'
    messages = [{"role": "user", "content": prompt}]
    r = c.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL, TIME_TOOL])
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert [tc.function.name for tc in msg.tool_calls] == ["get_weather", "get_time"]
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert msg.tool_calls[1].function.arguments == "{}"
    assert all(re.fullmatch(r"call_[A-Za-z0-9]{24}", tc.id) for tc in msg.tool_calls)

    follow = messages + [
        msg.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "18C"},
        {"role": "tool", "tool_call_id": msg.tool_calls[1].id, "content": "noon"},
    ]
    r2 = c.chat.completions.create(model="gpt-4o-mini", messages=follow, tools=[WEATHER_TOOL, TIME_TOOL])
    assert r2.choices[0].message.content == "tool results: 18C | noon"

    streamer = getattr(c.chat.completions, "stream", None) or c.beta.chat.completions.stream
    with streamer(model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL, TIME_TOOL]) as s:
        final = s.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [tc.function.name for tc in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert [tc.id for tc in calls] == [tc.id for tc in msg.tool_calls]


def test_openai_structured_output_parse(openai_mock):
    from pydantic import BaseModel

    class Echo(BaseModel):
        echo: str

    c = _openai(openai_mock)
    parse = getattr(c.chat.completions, "parse", None) or c.beta.chat.completions.parse
    r = parse(model="gpt-4o-mini", messages=[{"role": "user", "content": 'say "hi"'}], response_format=Echo)
    assert r.choices[0].message.parsed == Echo(echo='say "hi"')


def test_openai_embeddings_and_models(openai_mock):
    c = _openai(openai_mock)
    default = c.embeddings.create(model="text-embedding-3-small", input=["hello world", "x"])
    floats = c.embeddings.create(model="text-embedding-3-small", input=["hello world", "x"], encoding_format="float")
    assert len(default.data) == 2 and len(default.data[0].embedding) == 8
    for a, b in zip(default.data[0].embedding, floats.data[0].embedding):
        assert abs(a - b) < 1e-6
    assert default.usage.prompt_tokens == 3
    sized = c.embeddings.create(model="text-embedding-3-small", input="x", dimensions=16)
    assert len(sized.data[0].embedding) == 16
    assert [m.id for m in c.models.list()] == ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]


def test_openai_errors_and_retries(openai_mock):
    import openai

    c = _openai(openai_mock)
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="gpt-4o-mini+fault=1+code=429", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 429
    assert e.value.code == "rate_limit_exceeded"

    with pytest.raises(openai.InternalServerError) as e:
        c.chat.completions.create(model="gpt-4o-mini+code=529", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 529

    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_x", "content": "y"}],
        )
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}])

    with pytest.raises(openai.APIError):
        for _ in c.chat.completions.create(
            model="gpt-4o-mini+kind=stream_error", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            pass

    with pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(model="gpt-4o-mini+kind=reset", messages=[{"role": "user", "content": "x"}])

    # The SDK retries a 503 (honouring retry-after) and the mock counts every attempt.
    openai_mock.admin("POST", "/mock/reset")
    openai_mock.behave(retry_after_secs=0)
    retrying = _openai(openai_mock, max_retries=2)
    with pytest.raises(openai.InternalServerError):
        retrying.chat.completions.create(model="gpt-4o-mini+code=503", messages=[{"role": "user", "content": "x"}])
    stats = openai_mock.stats()
    assert stats["requests"] == 3 and stats["faults"] == 3
    assert stats["by_model"] == {"gpt-4o-mini": 3}

    openai_mock.behave(key_status={"sk-revoked": 401})
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=openai_mock.url + "/v1", api_key="sk-revoked", max_retries=0).models.list()
    recorded = openai_mock.requests()
    assert recorded[-1]["key"] == "sk-revoked"
    assert recorded[-1]["headers"]["authorization"] == "Bearer sk-revoked"


# ---------------------------------------------------------------- Azure


def _azure(m: Mock):
    import openai

    return openai.AzureOpenAI(azure_endpoint=m.url, api_key="azure-key-0001", api_version="2024-10-21", max_retries=0)


def test_azure_chat_stream_embeddings(azure_mock):
    import openai

    c = _azure(azure_mock)
    r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi there"}])
    assert r.choices[0].message.content == "echo: hi there"
    assert r.model_extra["prompt_filter_results"][0]["prompt_index"] == 0

    chunks = list(
        c.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "a b"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices == [] and chunks[0].id == ""
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "echo: a b"
    assert chunks[-1].usage.completion_tokens == 3

    r = c.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "[[tool:get_weather {\"city\":\"Oslo\"}]]"}], tools=[WEATHER_TOOL]
    )
    assert json.loads(r.choices[0].message.tool_calls[0].function.arguments) == {"city": "Oslo"}

    e = c.embeddings.create(model="text-embedding-3-small", input="hello")
    assert len(e.data[0].embedding) == 8

    with pytest.raises(openai.NotFoundError) as err:
        c.chat.completions.create(model="no-such-deployment", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "DeploymentNotFound"

    rec = azure_mock.requests()[0]
    assert rec["path"] == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert "api-version=2024-10-21" in rec["query"]
    assert rec["key"] == "azure-key-0001"


# ---------------------------------------------------------------- Anthropic


def _anthropic(m: Mock):
    import anthropic

    return anthropic.Anthropic(base_url=m.url, api_key="sk-ant-test-0001", max_retries=0)


def test_anthropic_messages_and_image(anthropic_mock):
    c = _anthropic(anthropic_mock)
    r = c.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=256,
        system="be kind",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look at this"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                ],
            }
        ],
    )
    expected = "echo: look at this" + png_note()
    assert r.type == "message" and r.role == "assistant"
    assert r.content[0].text == expected
    assert r.stop_reason == "end_turn"
    assert r.usage.input_tokens == 5
    assert r.usage.output_tokens == len(expected.split())

    r = c.messages.create(
        model="claude-sonnet-4-6", max_tokens=256, messages=[{"role": "user", "content": "[[cached:3]] a b c d"}]
    )
    assert r.usage.cache_read_input_tokens == 3
    assert r.usage.input_tokens == 2

    assert c.messages.count_tokens(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "a b c"}]).input_tokens == 3


def test_anthropic_stream_and_tools(anthropic_mock):
    c = _anthropic(anthropic_mock)
    with c.messages.stream(
        model="claude-sonnet-4-6", max_tokens=256, messages=[{"role": "user", "content": "hello world"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "echo: hello world"
    assert final.usage.output_tokens == 3
    assert final.stop_reason == "end_turn"

    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    prompt = '[[tool:get_weather {"city":"Paris"}]] [[tool:get_weather {"city":"Rome"}]]'
    with c.messages.stream(
        model="claude-sonnet-4-6", max_tokens=256, tools=tools, messages=[{"role": "user", "content": prompt}]
    ) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [u.input for u in uses] == [{"city": "Paris"}, {"city": "Rome"}]
    assert all(re.fullmatch(r"toolu_[A-Za-z0-9]{24}", u.id) for u in uses)

    r = c.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=256,
        tools=tools,
        messages=[
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": [u.model_dump() for u in uses]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": uses[0].id, "content": "18C"},
                    {"type": "tool_result", "tool_use_id": uses[1].id, "content": "21C"},
                ],
            },
        ],
    )
    assert r.content[0].text == "tool results: 18C | 21C"


def test_anthropic_errors_and_models(anthropic_mock):
    import anthropic

    c = _anthropic(anthropic_mock)
    with pytest.raises(anthropic.BadRequestError):
        c.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=10,
            messages=[{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}],
        )
    with pytest.raises(anthropic.BadRequestError):
        c.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=10,
            messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "r"}]}],
        )
    with pytest.raises(anthropic.APIStatusError) as e:
        c.messages.create(model="claude-sonnet-4-6+code=529", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 529
    assert e.value.body["error"]["type"] == "overloaded_error"
    with pytest.raises(anthropic.RateLimitError):
        c.messages.create(model="claude-sonnet-4-6+code=429", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.NotFoundError):
        c.messages.create(model="claude-nope", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.APIError):
        with c.messages.stream(
            model="claude-sonnet-4-6+kind=stream_error", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        ) as s:
            s.get_final_message()

    assert [m.id for m in c.models.list()] == ["claude-sonnet-4-6", "claude-haiku-4-5"]
    assert [m.id for m in c.models.list(limit=1)] == ["claude-sonnet-4-6", "claude-haiku-4-5"]  # auto-paging

    anthropic_mock.behave(key_status={"sk-ant-test-0001": 401})
    with pytest.raises(anthropic.AuthenticationError):
        c.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}])


# ---------------------------------------------------------------- Ollama


def test_ollama_chat_stream_tools_embed(ollama_mock):
    import ollama

    c = ollama.Client(host=ollama_mock.url)
    r = c.chat(model="llava", messages=[{"role": "user", "content": "what is this", "images": [base64.b64decode(PNG_B64)]}])
    assert r.message.content == "echo: what is this" + png_note()
    assert r.done and r.done_reason == "stop"

    parts = list(c.chat(model="llama3.2", messages=[{"role": "user", "content": "hello world"}], stream=True))
    assert "".join(p.message.content for p in parts) == "echo: hello world"
    assert parts[-1].done and parts[-1].eval_count == 3 and parts[-1].prompt_eval_count == 2

    r = c.chat(
        model="llama3.2",
        messages=[{"role": "user", "content": '[[tool:get_weather {"city":"Toronto"}]]'}],
        tools=[WEATHER_TOOL],
    )
    assert r.message.tool_calls[0].function.name == "get_weather"
    assert r.message.tool_calls[0].function.arguments == {"city": "Toronto"}

    r = c.chat(
        model="llama3.2",
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Toronto"}}}]},
            {"role": "tool", "content": "11 degrees", "tool_name": "get_weather"},
        ],
    )
    assert r.message.content == "tool results: 11 degrees"

    r = c.chat(model="llama3.2", messages=[{"role": "user", "content": "a b c d"}], options={"num_predict": 2})
    assert r.message.content == "echo: a" and r.done_reason == "length"

    e = c.embed(model="all-minilm", input=["a b", "c"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0]) == 8

    assert sorted(m.model for m in c.list().models) == ["all-minilm:latest", "llama3.2:latest", "llava:latest"]

    with pytest.raises(ollama.ResponseError) as err:
        c.chat(model="mistral", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404
    assert "not found" in err.value.error

    with pytest.raises(ollama.ResponseError):
        list(c.chat(model="llama3.2+kind=stream_error", messages=[{"role": "user", "content": "x"}], stream=True))

    assert ollama_mock.stats()["by_model"]["llama3.2"] >= 4
