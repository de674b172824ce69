//! Bedrock flavour over real HTTP: SigV4 and Bearer authentication, Converse validation and replies, the
//! event-stream framing of ConverseStream, AWS error shapes, faults in a binary stream, and embeddings.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, Flavor, MockConfig};
use switchyard_wire::eventstream::{Decoder, EventStreamError, Message};
use switchyard_wire::sigv4::{self, AwsCredentials};
use switchyard_wire::WireRequest;

const MODEL_PATH: &str = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0";
const BEARER: (&str, &str) = ("authorization", "Bearer ABSKbedrock-api-key-0001");

fn creds() -> AwsCredentials {
    AwsCredentials {
        access_key_id: switchyard_mock::BEDROCK_ACCESS_KEY_ID.into(),
        secret_access_key: switchyard_mock::BEDROCK_SECRET_ACCESS_KEY.into(),
        session_token: Some("session-token-1".into()),
    }
}

/// Signs a JSON POST to `addr` + `path`; returns the headers to send besides `content-type` (which the
/// test client adds itself, as the signature expects).
fn signed(addr: SocketAddr, path: &str, body: &Value, c: &AwsCredentials, region: &str, at: i64) -> Vec<(String, String)> {
    let mut w = WireRequest::post_json(format!("http://{addr}{path}"), body.to_string().into_bytes());
    sigv4::sign(&mut w, c, region, "bedrock", at).unwrap();
    w.headers.into_iter().filter(|(n, _)| n != "content-type").collect()
}

async fn post_signed(addr: SocketAddr, path: &str, body: &Value) -> Resp {
    let h = signed(addr, path, body, &creds(), "eu-central-1", now_secs() as i64);
    let refs: Vec<(&str, &str)> = h.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    post(addr, path, &refs, body).await
}

fn converse(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": [{"text": text}]}]})
}

fn aws_error(r: &Resp) -> (String, String) {
    let shape = r.header("x-amzn-errortype").unwrap_or_else(|| panic!("no x-amzn-errortype: {}", r.text()));
    assert!(r.header("x-amzn-requestid").is_some());
    (shape.split(':').next().unwrap().to_string(), r.json()["message"].as_str().unwrap().to_string())
}

fn frames(body: &[u8]) -> Result<Vec<Message>, EventStreamError> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for piece in body.chunks(5) {
        d.feed(piece, &mut out)?;
    }
    d.finish()?;
    Ok(out)
}

fn events(r: &Resp) -> Vec<(String, Value)> {
    assert_eq!(r.header("content-type"), Some("application/vnd.amazon.eventstream"));
    frames(&r.body)
        .unwrap()
        .into_iter()
        .map(|m| {
            let kind = m.header_str(":event-type").or(m.header_str(":exception-type")).unwrap().to_string();
            (kind, serde_json::from_slice(&m.payload).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn sigv4_is_verified_as_aws_does() {
    let m = start(Flavor::Bedrock).await;
    let a = m.addr();
    let path = format!("{MODEL_PATH}/converse");
    let body = converse("hello there");
    let r = post_signed(a, &path, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["output"]["message"]["content"][0]["text"], "echo: hello there");
    assert_eq!(m.stats().by_key.get(switchyard_mock::BEDROCK_ACCESS_KEY_ID), Some(&1));

    let refuse = |h: Vec<(String, String)>, b: Value| {
        let path = path.clone();
        async move {
            let refs: Vec<(&str, &str)> = h.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            post(a, &path, &refs, &b).await
        }
    };
    let now = now_secs() as i64;
    // The body was not the one signed.
    let r = refuse(signed(a, &path, &body, &creds(), "eu-central-1", now), converse("other")).await;
    assert_eq!(r.status, 403);
    assert_eq!(aws_error(&r).0, "InvalidSignatureException");
    // The wrong secret.
    let wrong = AwsCredentials { secret_access_key: "nope".into(), ..creds() };
    let r = refuse(signed(a, &path, &body, &wrong, "eu-central-1", now), body.clone()).await;
    assert_eq!(aws_error(&r).0, "InvalidSignatureException");
    // An unknown access key.
    let stranger = AwsCredentials { access_key_id: "AKIAUNKNOWN".into(), ..creds() };
    let r = refuse(signed(a, &path, &body, &stranger, "eu-central-1", now), body.clone()).await;
    assert_eq!(aws_error(&r), ("UnrecognizedClientException".into(), "The security token included in the request is invalid.".into()));
    // Twenty minutes old.
    let r = refuse(signed(a, &path, &body, &creds(), "eu-central-1", now - 1200), body.clone()).await;
    assert_eq!(aws_error(&r).0, "InvalidSignatureException");
    assert!(aws_error(&r).1.starts_with("Signature expired"));
    // No authorization at all.
    let r = post(a, &path, &[], &body).await;
    assert_eq!((r.status, aws_error(&r).0.as_str()), (403, "MissingAuthenticationTokenException"));
    // A path signed single-encoded (the classic bug) does not verify.
    let single = "/model/anthropic.claude-3-5-haiku-20241022-v1:0/converse";
    let h = signed(a, single, &body, &creds(), "eu-central-1", now);
    let refs: Vec<(&str, &str)> = h.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let r = post(a, &path, &refs, &body).await;
    assert_eq!(aws_error(&r).0, "InvalidSignatureException");
}

#[tokio::test]
async fn bearer_keys_and_require_key() {
    let m = start(Flavor::Bedrock).await;
    let path = format!("{MODEL_PATH}/converse");
    assert_eq!(post(m.addr(), &path, &[BEARER], &converse("hi")).await.status, 200);
    let mut cfg = MockConfig::new(Flavor::Bedrock);
    cfg.require_key = Some("ABSK-the-one".into());
    let m = start_with(cfg).await;
    let r = post(m.addr(), &path, &[BEARER], &converse("hi")).await;
    assert_eq!((r.status, aws_error(&r).0.as_str()), (403, "UnrecognizedClientException"));
    assert_eq!(post(m.addr(), &path, &[("authorization", "Bearer ABSK-the-one")], &converse("hi")).await.status, 200);
    // With require_key set, SigV4 must come from that access key id.
    assert_eq!(post_signed(m.addr(), &path, &converse("hi")).await.status, 403);
}

#[tokio::test]
async fn converse_replies_tools_and_usage() {
    let m = start(Flavor::Bedrock).await;
    let a = m.addr();
    let path = format!("{MODEL_PATH}/converse");
    let body = json!({"system": [{"text": "be brief"}],
        "messages": [{"role": "user", "content": [{"text": "look [[cached:2]]"}, {"image": {"format": "png", "source": {"bytes": PNG_B64}}}]}],
        "inferenceConfig": {"maxTokens": 50}});
    let r = post(a, &path, &[BEARER], &body).await;
    let v = r.json();
    assert_eq!(v["output"]["message"]["content"][0]["text"], format!("echo: look [[cached:2]]{}", png_note()));
    assert_eq!(v["stopReason"], "end_turn");
    assert_eq!(
        v["usage"],
        json!({"inputTokens": 2, "outputTokens": 8, "totalTokens": 12, "cacheReadInputTokens": 2, "cacheWriteInputTokens": 0})
    );
    assert!(v["metrics"]["latencyMs"].is_u64());

    let tools = json!({"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]});
    let mut b = converse(r#"[[tool:get_weather {"city":"Paris"}]]"#);
    b["toolConfig"] = tools.clone();
    let v = post(a, &path, &[BEARER], &b).await.json();
    assert_eq!(v["stopReason"], "tool_use");
    let call = &v["output"]["message"]["content"][0]["toolUse"];
    assert_eq!(call["input"], json!({"city": "Paris"}));
    let id = call["toolUseId"].as_str().unwrap().to_string();
    assert!(id.starts_with("tooluse_") && id.len() == 30, "{id}");

    let round = json!({"toolConfig": tools, "messages": [
        {"role": "user", "content": [{"text": "weather?"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": id, "name": "get_weather", "input": {"city": "Paris"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": id, "content": [{"text": "18C"}], "status": "success"}}]}]});
    let v = post(a, &path, &[BEARER], &round).await.json();
    assert_eq!(v["output"]["message"]["content"][0]["text"], "tool results: 18C");

    let mut forced = converse("anything");
    forced["toolConfig"] =
        json!({"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}}], "toolChoice": {"tool": {"name": "f"}}});
    let v = post(a, &path, &[BEARER], &forced).await.json();
    assert_eq!(v["output"]["message"]["content"][0]["toolUse"]["name"], "f");

    let mut limited = converse("one two three four");
    limited["inferenceConfig"] = json!({"maxTokens": 2, "stopSequences": ["four"]});
    let v = post(a, &path, &[BEARER], &limited).await.json();
    assert_eq!((v["stopReason"].as_str(), v["output"]["message"]["content"][0]["text"].as_str()), (Some("max_tokens"), Some("echo: one")));
}

#[tokio::test]
async fn converse_stream_is_an_event_stream() {
    let m = start(Flavor::Bedrock).await;
    let a = m.addr();
    let path = format!("{MODEL_PATH}/converse-stream");
    let r = post_signed(a, &path, &converse("hello big world")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = events(&r);
    let kinds: Vec<&str> = ev.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    let text: String = ev.iter().filter_map(|(_, v)| v["delta"]["text"].as_str()).collect();
    assert_eq!(text, "echo: hello big world");
    assert_eq!(ev[6].1, json!({"stopReason": "end_turn"}));
    assert_eq!(ev[7].1["usage"], json!({"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}));

    let mut b = converse(r#"[[tool:get_weather {"city":"Paris"}]]"#);
    b["toolConfig"] = json!({"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]});
    let ev = events(&post(a, &path, &[BEARER], &b).await);
    assert_eq!(ev[1].0, "contentBlockStart");
    assert_eq!(ev[1].1["start"]["toolUse"]["name"], "get_weather");
    let args: String = ev.iter().filter_map(|(_, v)| v["delta"]["toolUse"]["input"].as_str()).collect();
    assert_eq!(args, r#"{"city":"Paris"}"#);
    assert_eq!(ev[ev.len() - 2].1, json!({"stopReason": "tool_use"}));
}

#[tokio::test]
async fn errors_are_aws_shapes() {
    let m = start(Flavor::Bedrock).await;
    let a = m.addr();
    let path = format!("{MODEL_PATH}/converse");
    for (directive, status, shape) in [
        ("[[error:429]]", 429, "ThrottlingException"),
        ("[[error:400]]", 400, "ValidationException"),
        ("[[error:403]]", 403, "AccessDeniedException"),
        ("[[error:404]]", 404, "ResourceNotFoundException"),
        ("[[error:408]]", 408, "ModelTimeoutException"),
        ("[[error:424]]", 424, "ModelErrorException"),
        ("[[error:500]]", 500, "InternalServerException"),
        ("[[error:503]]", 503, "ServiceUnavailableException"),
        ("[[quota]]", 400, "ServiceQuotaExceededException"),
        ("[[context]]", 400, "ValidationException"),
    ] {
        let r = post(a, &path, &[BEARER], &converse(directive)).await;
        assert_eq!((r.status, aws_error(&r).0.as_str()), (status, shape), "{directive}");
    }
    let r = post(a, &path, &[BEARER], &converse("[[context]]")).await;
    assert!(aws_error(&r).1.starts_with("Input is too long for requested model."));
    let r = post(a, "/model/not.a-model%3A0/converse", &[BEARER], &converse("hi")).await;
    assert_eq!((r.status, aws_error(&r).0.as_str()), (404, "ResourceNotFoundException"));
    let r = post(a, &path, &[BEARER], &json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "model": "x"})).await;
    assert_eq!(aws_error(&r), ("ValidationException".into(), "Malformed input request: extraneous key [model] is not permitted".into()));
    let r = post(a, "/v1/chat/completions", &[BEARER], &converse("hi")).await;
    assert_eq!((r.status, aws_error(&r).0.as_str()), (404, "UnknownOperationException"));
}

#[tokio::test]
async fn stream_faults_in_binary_framing() {
    let m = start(Flavor::Bedrock).await;
    let a = m.addr();
    let path = format!("{MODEL_PATH}/converse-stream");
    m.set_behavior(Behavior { fault_rate: 1.0, fault_kind: Some(switchyard_mock::FaultKind::LateStreamError), ..Behavior::default() });
    let ev = events(&post(a, &path, &[BEARER], &converse("one two three")).await);
    assert_eq!(ev.last().unwrap().0, "throttlingException");
    assert_eq!(ev[1].0, "contentBlockDelta", "the error comes after the first content");
    m.set_behavior(Behavior { fault_rate: 1.0, fault_kind: Some(switchyard_mock::FaultKind::Malformed), ..Behavior::default() });
    let r = post(a, &path, &[BEARER], &converse("one two three")).await;
    let msgs = frames(&r.body).unwrap();
    assert!(msgs.iter().any(|m| serde_json::from_slice::<Value>(&m.payload).is_err()), "a frame with a broken payload");
    m.set_behavior(Behavior { endless_line_bytes: Some(100_000), ..Behavior::default() });
    let r = post(a, &path, &[BEARER], &converse("one two three")).await;
    assert_eq!(frames(&r.body).unwrap_err(), EventStreamError::Truncated(100_012));
    let mut d = Decoder::new();
    d.set_max_message_bytes(4096);
    assert!(matches!(d.feed(&r.body, &mut Vec::new()), Err(EventStreamError::TooLong { .. })));
}

#[tokio::test]
async fn embeddings_through_invoke_model() {
    let m = start(Flavor::Bedrock).await;
    let a = m.addr();
    let r =
        post(a, "/model/amazon.titan-embed-text-v2%3A0/invoke", &[BEARER], &json!({"inputText": "hello world", "dimensions": 256})).await;
    let v = r.json();
    assert_eq!((v["embedding"].as_array().unwrap().len(), v["inputTextTokenCount"].as_u64()), (256, Some(2)));
    let r = post(a, "/model/amazon.titan-embed-text-v2%3A0/invoke", &[BEARER], &json!({"inputText": "x", "dimensions": 300})).await;
    assert_eq!(aws_error(&r).0, "ValidationException");
    let r =
        post(a, "/model/cohere.embed-multilingual-v3/invoke", &[BEARER], &json!({"texts": ["a", "b"], "input_type": "search_query"})).await;
    let v = r.json();
    assert_eq!((v["embeddings"].as_array().unwrap().len(), v["response_type"].as_str()), (2, Some("embeddings_floats")));
    let r = post(a, "/model/cohere.embed-multilingual-v3/invoke", &[BEARER], &json!({"texts": ["a"]})).await;
    assert_eq!(aws_error(&r).0, "ValidationException");
}
