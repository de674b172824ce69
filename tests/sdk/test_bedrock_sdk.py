"""The gateway as a Bedrock Runtime endpoint (`<gateway>/bedrock`), driven by boto3's `bedrock-runtime` client.

The same `stack` as the other SDK tests (conftest.py): an OpenAI mock (`openai`) and an Anthropic mock
(`anthropic`) behind one gateway. Every scenario runs over both, so a Bedrock client sees the same answers
whichever provider serves the model (the mocks answer deterministically: `echo: <last user text>`, image
notes, `[[tool:NAME {json}]]`, `[[error:STATUS]]`). The model id boto3 puts in the path is the Switchyard
model name. boto3 signs with SigV4; the gateway reads the access key id as the virtual key and does not
check the signature (crates/server/src/bedrock.rs says why), so any secret works. boto3's own retries are
off (`max_attempts=1`): what the gateway answers is what the test sees.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import Procs, Stack, http_json, image_note, stack_config

CHAT = {"openai": "openai/gpt-4o-mini", "anthropic": "anthropic/claude-sonnet-4-6"}
PROVIDERS = list(CHAT)

WEATHER = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    }
}


def client(stack_or_url: Any, key: str = "anything") -> Any:
    url = stack_or_url if isinstance(stack_or_url, str) else stack_or_url.url
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url + "/bedrock",
        region_name="eu-central-1",
        aws_access_key_id=key,
        aws_secret_access_key="not-checked-by-the-gateway",
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=20, connect_timeout=5),
    )


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"text": text}]}]


def headers(resp: dict) -> dict:
    return resp["ResponseMetadata"]["HTTPHeaders"]


def last_post(stack: Stack, provider: str) -> dict:
    reqs = [r for r in stack.mocks[provider].requests() if r["method"] == "POST"]
    assert reqs, f"the {provider} mock saw no request"
    return reqs[-1]


def events(stream: Any) -> list[tuple[str, dict]]:
    out = []
    for e in stream:
        ((name, body),) = e.items()
        out.append((name, body))
    return out


# ---------------------------------------------------------------------------------------------------------
# Converse
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_converse_on_every_upstream(stack: Stack, provider: str):
    r = client(stack).converse(modelId=CHAT[provider], messages=user("hello there"))
    assert r["output"]["message"] == {"role": "assistant", "content": [{"text": "echo: hello there"}]}
    assert r["stopReason"] == "end_turn"
    assert r["usage"]["inputTokens"] == 2 and r["usage"]["outputTokens"] == 3 and r["usage"]["totalTokens"] == 5
    h = headers(r)
    assert h["x-switchyard-provider"] == provider
    assert h["x-amzn-requestid"] == h["x-request-id"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_system_and_inference_config_reach_the_upstream(stack: Stack, provider: str):
    r = client(stack).converse(
        modelId=CHAT[provider],
        system=[{"text": "be terse"}],
        messages=user("one two three four"),
        inferenceConfig={"maxTokens": 2, "temperature": 0.5, "topP": 0.9},
    )
    assert r["output"]["message"]["content"] == [{"text": "echo: one"}]
    assert r["stopReason"] == "max_tokens"
    sent = last_post(stack, provider)["body"]
    if provider == "anthropic":
        assert "be terse" in json.dumps(sent["system"])
        assert sent["max_tokens"] == 2
    else:
        assert sent["messages"][0] == {"role": "system", "content": "be terse"}
        assert sent["max_tokens"] == 2 and sent["top_p"] == 0.9
    assert sent["temperature"] == 0.5
    r = client(stack).converse(modelId=CHAT[provider], messages=user("one two three four"), inferenceConfig={"stopSequences": ["three"]})
    assert r["output"]["message"]["content"] == [{"text": "echo: one two "}] and r["stopReason"] == "end_turn"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_multi_turn(stack: Stack, provider: str):
    msgs = [
        {"role": "user", "content": [{"text": "first question"}]},
        {"role": "assistant", "content": [{"text": "first answer"}]},
        {"role": "user", "content": [{"text": "second"}]},
    ]
    r = client(stack).converse(modelId=CHAT[provider], messages=msgs)
    assert r["output"]["message"]["content"] == [{"text": "echo: second"}]
    assert r["usage"]["inputTokens"] == 5


@pytest.mark.parametrize("provider", PROVIDERS)
def test_image_bytes(stack: Stack, provider: str, png_bytes: bytes):
    content = [{"text": "look"}, {"image": {"format": "png", "source": {"bytes": png_bytes}}}]
    r = client(stack).converse(modelId=CHAT[provider], messages=[{"role": "user", "content": content}])
    assert r["output"]["message"]["content"] == [{"text": f"echo: look{image_note(png_bytes)}"}]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_use_and_tool_result_round_trip(stack: Stack, provider: str):
    c = client(stack)
    r = c.converse(
        modelId=CHAT[provider],
        messages=user('[[tool:get_weather {"city":"Paris"}]]'),
        toolConfig={"tools": [WEATHER], "toolChoice": {"auto": {}}},
    )
    assert r["stopReason"] == "tool_use"
    uses = [b["toolUse"] for b in r["output"]["message"]["content"] if "toolUse" in b]
    assert len(uses) == 1 and uses[0]["name"] == "get_weather" and uses[0]["input"] == {"city": "Paris"}
    assert uses[0]["toolUseId"]
    msgs = user("weather in Paris?") + [
        r["output"]["message"],
        {"role": "user", "content": [{"toolResult": {"toolUseId": uses[0]["toolUseId"], "content": [{"text": "18C"}]}}]},
    ]
    r = c.converse(modelId=CHAT[provider], messages=msgs, toolConfig={"tools": [WEATHER]})
    assert r["output"]["message"]["content"] == [{"text": "tool results: 18C"}]
    assert r["stopReason"] == "end_turn"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_forced_tool_choice(stack: Stack, provider: str):
    r = client(stack).converse(
        modelId=CHAT[provider], messages=user("whatever"), toolConfig={"tools": [WEATHER], "toolChoice": {"tool": {"name": "get_weather"}}}
    )
    assert r["stopReason"] == "tool_use"
    assert [b["toolUse"]["name"] for b in r["output"]["message"]["content"] if "toolUse" in b] == ["get_weather"]


# ---------------------------------------------------------------------------------------------------------
# ConverseStream
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_converse_stream_text(stack: Stack, provider: str):
    r = client(stack).converse_stream(modelId=CHAT[provider], messages=user("hello stream"))
    assert headers(r)["content-type"] == "application/vnd.amazon.eventstream"
    evs = events(r["stream"])
    names = [n for n, _ in evs]
    assert names[0] == "messageStart" and evs[0][1] == {"role": "assistant"}
    assert names[-2:] == ["messageStop", "metadata"]
    text = "".join(b["delta"]["text"] for n, b in evs if n == "contentBlockDelta")
    assert text == "echo: hello stream"
    assert evs[-2][1]["stopReason"] == "end_turn"
    usage = evs[-1][1]["usage"]
    assert usage["inputTokens"] == 2 and usage["outputTokens"] == 3 and usage["totalTokens"] == 5


@pytest.mark.parametrize("provider", PROVIDERS)
def test_converse_stream_tool_use(stack: Stack, provider: str):
    r = client(stack).converse_stream(
        modelId=CHAT[provider], messages=user('[[tool:get_weather {"city":"Reykjavik"}]]'), toolConfig={"tools": [WEATHER]}
    )
    evs = events(r["stream"])
    starts = [b["start"]["toolUse"] for n, b in evs if n == "contentBlockStart"]
    assert len(starts) == 1 and starts[0]["name"] == "get_weather" and starts[0]["toolUseId"]
    args = "".join(b["delta"]["toolUse"]["input"] for n, b in evs if n == "contentBlockDelta" and "toolUse" in b["delta"])
    assert json.loads(args) == {"city": "Reykjavik"}
    assert [b for n, b in evs if n == "messageStop"] == [{"stopReason": "tool_use"}]


def test_mid_stream_failure_is_an_exception_event(fresh: Stack):
    r = client(fresh).converse_stream(modelId=CHAT["openai"] + "+kind=late_stream_error", messages=user("x y z"))
    with pytest.raises(botocore.exceptions.EventStreamError) as e:
        events(r["stream"])
    assert e.value.response["Error"]["Code"] in ("internalServerException", "serviceUnavailableException")


# ---------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------


def code_of(e: pytest.ExceptionInfo) -> tuple[str, int]:
    err = e.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def test_unknown_model_is_resource_not_found(stack: Stack):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(stack).converse(modelId="nobody/nothing", messages=user("x"))
    assert code_of(e)[1] in (400, 404)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_upstream_refusal_is_a_validation_exception(stack: Stack, provider: str):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(stack).converse(modelId=CHAT[provider], messages=user("[[error:400]]"))
    assert code_of(e) == ("ValidationException", 400)
    assert e.value.response["Error"]["Message"]


def test_bad_blocks_are_refused_before_any_upstream(stack: Stack):
    before = len(stack.mocks["openai"].requests())
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(stack).converse(
            modelId=CHAT["openai"], messages=[{"role": "user", "content": [{"image": {"format": "png", "source": {"s3Location": {"uri": "s3://b/k"}}}}]}]
        )
    assert code_of(e) == ("ValidationException", 400)
    assert "s3Location" in e.value.response["Error"]["Message"]
    assert len(stack.mocks["openai"].requests()) == before


def test_throttling_is_a_throttling_exception(fresh: Stack):
    # `limited` answers every request with a 429 and no route gives this model a fallback.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(fresh).converse(modelId="limited/claude-sonnet-4-6", messages=user("hi"))
    assert code_of(e) == ("ThrottlingException", 429)


def test_unknown_operation(stack: Stack):
    status, body = http_json("POST", stack.url + "/bedrock/model/openai%2Fgpt-4o-mini/count-tokens", {})
    assert status == 404 and body["message"]


# ---------------------------------------------------------------------------------------------------------
# Virtual keys: the SigV4 access key id, or a Bearer key
# ---------------------------------------------------------------------------------------------------------

VK = "sk-vk-bedrock-test"


@pytest.fixture(scope="module")
def keyed(procs: Procs, mocks, provider_pins) -> Iterator[Stack]:
    config = stack_config(mocks, provider_pins)
    config["governance"] = {
        "virtual_keys": [
            {"id": "vk-bedrock", "name": "boto", "value": VK, "provider_configs": [{"provider": "openai", "allowed_models": ["gpt-4o-mini"]}]}
        ]
    }
    gw = procs.gateway(config, name="gateway-keyed-bedrock")
    try:
        yield Stack(gw, mocks)
    finally:
        procs.stop(gw.proc)


def test_virtual_key_as_access_key_id_or_bearer(keyed: Stack):
    r = client(keyed, key=VK).converse(modelId=CHAT["openai"], messages=user("keyed"))
    assert r["output"]["message"]["content"] == [{"text": "echo: keyed"}]
    body = {"messages": user("bearer")}
    status, data = http_json("POST", keyed.url + "/bedrock/model/openai%2Fgpt-4o-mini/converse", body, {"Authorization": f"Bearer {VK}"})
    assert status == 200 and data["output"]["message"]["content"] == [{"text": "echo: bearer"}]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(keyed, key="AKIAWRONGKEY").converse(modelId=CHAT["openai"], messages=user("x"))
    assert code_of(e)[1] == 401
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(keyed, key=VK).converse(modelId=CHAT["anthropic"], messages=user("x"))
    assert code_of(e) == ("AccessDeniedException", 403)


# ---------------------------------------------------------------------------------------------------------
# InvokeModel: embeddings in Titan's and Cohere's bodies
# ---------------------------------------------------------------------------------------------------------


def test_invoke_model_embeddings(stack: Stack):
    c = client(stack)
    r = c.invoke_model(
        modelId="openai/text-embedding-3-small", body=json.dumps({"inputText": "hello"}), contentType="application/json", accept="application/json"
    )
    out = json.loads(r["body"].read())
    assert isinstance(out["embedding"], list) and out["embedding"] and out["inputTextTokenCount"] >= 1
    r = c.invoke_model(
        modelId="openai/text-embedding-3-small",
        body=json.dumps({"texts": ["alpha", "beta"], "input_type": "search_document"}),
        contentType="application/json",
    )
    out = json.loads(r["body"].read())
    assert len(out["embeddings"]) == 2 and out["texts"] == ["alpha", "beta"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.invoke_model(modelId=CHAT["openai"], body=json.dumps({"prompt": "hi"}), contentType="application/json")
    assert code_of(e) == ("ValidationException", 400)
