"""The gateway's `/genai` drop-in routes driven by the official `google-genai` SDK, unchanged but for its base
URL (`http_options.base_url = <gateway>/genai`), over three different upstream wire formats: an OpenAI mock,
an Anthropic mock and a Gemini mock. Also the gateway calling the Gemini mock through the OpenAI routes.

The mocks answer deterministically (crates/mock/src/lib.rs): `echo: <last user text>`, image notes, and
directives such as `[[tool:NAME {json}]]` and `[[error:STATUS]]`, so every assertion is exact. The SDK does
not retry unless told to, so every error below is the gateway's first answer.
"""

from __future__ import annotations

from typing import Any

import pytest
from google import genai
from google.genai import errors, types

from conftest import Procs, image_note

MODELS = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-sonnet-4-6",
    "gemini": "gemini/gemini-2.5-flash",
}
PROVIDERS = list(MODELS)

WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Current weather for a city",
    parameters=types.Schema(
        type=types.Type.OBJECT,
        properties={"city": types.Schema(type=types.Type.STRING)},
        required=["city"],
    ),
)


@pytest.fixture(scope="module")
def gateway(procs: Procs) -> Any:
    mocks = {name: procs.mock(flavor, name=f"genai-mock-{name}") for name, flavor in [("openai", "openai"), ("anthropic", "anthropic"), ("gemini", "gemini")]}
    config = {
        "images": {"allow_private_networks": ["127.0.0.1/32"]},
        "providers": {
            "openai": {"type": "openai", "base_url": mocks["openai"].url, "keys": [{"value": "sk-openai-test"}]},
            "anthropic": {"type": "anthropic", "base_url": mocks["anthropic"].url, "keys": [{"value": "sk-ant-test"}]},
            "gemini": {"type": "gemini", "base_url": mocks["gemini"].url, "keys": [{"value": "AIza-gemini-test"}]},
        },
    }
    # A 429 test must not leave a key cooling down for the tests after it.
    for p in config["providers"].values():
        p["key_cooldown"] = {"rate_limited": "1ms"}
    gw = procs.gateway(config, name="gateway-genai")
    gw.extra["mocks"] = mocks
    return gw


@pytest.fixture(scope="module")
def client(gateway: Any) -> genai.Client:
    return genai.Client(api_key="caller-key", http_options=types.HttpOptions(base_url=gateway.url + "/genai", timeout=20_000))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_chat(client: genai.Client, provider: str) -> None:
    r = client.models.generate_content(
        model=MODELS[provider],
        contents="hello world",
        config=types.GenerateContentConfig(system_instruction="be brief", temperature=0.5, max_output_tokens=50),
    )
    assert r.text == "echo: hello world"
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    u = r.usage_metadata
    # The system prompt's two words count as prompt tokens upstream.
    assert (u.prompt_token_count, u.candidates_token_count, u.total_token_count) == (4, 3, 7)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream(client: genai.Client, provider: str) -> None:
    chunks = list(client.models.generate_content_stream(model=MODELS[provider], contents="hello stream world"))
    assert "".join(c.text or "" for c in chunks) == "echo: hello stream world"
    assert len(chunks) >= 2
    last = chunks[-1]
    assert last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata.total_token_count == 3 + 4


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tools_with_a_function_response_round_trip(client: genai.Client, provider: str) -> None:
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    ask = types.Content(role="user", parts=[types.Part(text='[[tool:get_weather {"city":"Paris"}]]')])
    r = client.models.generate_content(model=MODELS[provider], contents=[ask], config=config)
    calls = r.function_calls
    assert calls is not None and len(calls) == 1
    assert (calls[0].name, calls[0].args) == ("get_weather", {"city": "Paris"})
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    history = [
        ask,
        r.candidates[0].content,
        types.Content(role="user", parts=[types.Part.from_function_response(name="get_weather", response={"result": "18C"})]),
    ]
    r = client.models.generate_content(model=MODELS[provider], contents=history, config=config)
    assert r.text == "tool results: 18C"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_streamed_tool_call_arrives_whole(client: genai.Client, provider: str) -> None:
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])])
    chunks = list(
        client.models.generate_content_stream(model=MODELS[provider], contents='[[tool:get_weather {"city":"Oslo"}]]', config=config)
    )
    calls = [fc for c in chunks for fc in (c.function_calls or [])]
    assert [(fc.name, fc.args) for fc in calls] == [("get_weather", {"city": "Oslo"})]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_image(client: genai.Client, provider: str, png_bytes: bytes) -> None:
    r = client.models.generate_content(
        model=MODELS[provider], contents=[types.Part.from_bytes(data=png_bytes, mime_type="image/png"), "look"]
    )
    assert r.text == "echo: look" + image_note(png_bytes)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_json_output(client: genai.Client, provider: str) -> None:
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
    r = client.models.generate_content(
        model=MODELS[provider],
        contents="hi",
        config=types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=schema),
    )
    if provider == "anthropic":
        # Anthropic has no JSON mode: the gateway forces a tool whose input schema is this one, and the mock's
        # forced call is the smallest object the schema accepts.
        assert isinstance(r.parsed, dict) and isinstance(r.parsed.get("echo"), str), r.text
    else:
        assert r.parsed == {"echo": "hi"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_errors_are_the_sdks_own_types(client: genai.Client, provider: str) -> None:
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_content(model=MODELS[provider], contents="[[error:429]]")
    assert e.value.code == 429
    assert e.value.status == "RESOURCE_EXHAUSTED"
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_content(model=MODELS[provider], contents="[[error:400]]")
    assert (e.value.code, e.value.status) == (400, "INVALID_ARGUMENT")
    assert e.value.message
    with pytest.raises(errors.ServerError) as e:
        client.models.generate_content(model=MODELS[provider], contents="[[error:503]]")
    assert (e.value.code, e.value.status) == (503, "UNAVAILABLE")
    with pytest.raises(errors.ServerError):
        list(client.models.generate_content_stream(model=MODELS[provider], contents="[[error:500]]"))


def test_bad_requests_and_unknown_models(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_content(
            model=MODELS["openai"], contents="x", config=types.GenerateContentConfig(tools=[types.Tool(google_search=types.GoogleSearch())])
        )
    assert (e.value.code, e.value.status) == (400, "INVALID_ARGUMENT")
    assert "googleSearch" in e.value.message
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_content(model="nosuch/model", contents="x")
    assert e.value.code in (400, 404)


def test_models_list_and_get(client: genai.Client) -> None:
    names = [m.name for m in client.models.list()]
    for model in MODELS.values():
        assert f"models/{model}" in names, names
    m = client.models.get(model=MODELS["openai"])
    assert m.name == f"models/{MODELS['openai']}"
    assert "generateContent" in (m.supported_actions or [])


def test_the_callers_key_reaches_the_gateway_not_the_upstream(gateway: Any, client: genai.Client) -> None:
    mock = gateway.extra["mocks"]["gemini"]
    mock.reset()
    client.models.generate_content(model=MODELS["gemini"], contents="key check")
    [req] = [r for r in mock.requests() if r["path"].endswith(":generateContent")]
    assert req["headers"]["x-goog-api-key"] == "AIza-gemini-test"
    assert req["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"


def test_openai_sdk_to_the_gemini_mock(gateway: Any) -> None:
    """The other direction: an OpenAI client, the gateway's Gemini codec, the Gemini mock."""
    c = gateway.client()
    r = c.chat.completions.create(model=MODELS["gemini"], messages=[{"role": "user", "content": "hello world"}])
    assert r.choices[0].message.content == "echo: hello world"
    assert r.usage.total_tokens == 5
    s = c.chat.completions.create(
        model=MODELS["gemini"], messages=[{"role": "user", "content": "streamed words"}], stream=True, stream_options={"include_usage": True}
    )
    parts = list(s)
    assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == "echo: streamed words"
    assert parts[-1].usage.total_tokens == 5
    e = c.embeddings.create(model="gemini/gemini-2.5-flash", input=["a", "b"])
    assert len(e.data) == 2
