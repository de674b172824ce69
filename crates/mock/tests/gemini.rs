//! Gemini flavour over real HTTP, in both path styles: JSON and `alt=sse` answers, the credential each style
//! reads, Google RPC error bodies, faults inside streams, embeddings and the model list.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Flavor, MockConfig};

const API: &str = "/v1beta/models/gemini-2.5-flash";
const VERTEX: &str = "/v1/projects/proj-1/locations/us-central1/publishers/google/models/gemini-2.5-flash";
const KEY: (&str, &str) = ("x-goog-api-key", "AIza-test");
const TOKEN: (&str, &str) = ("authorization", "Bearer ya29.test");

fn ask(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

/// The `data:` frames of a Google SSE body (CRLF-separated).
fn frames(r: &Resp) -> Vec<Value> {
    let t = r.text();
    assert!(t.contains("\r\n\r\n"), "Google frames end in CRLF CRLF: {t:?}");
    t.split("\r\n\r\n").filter(|f| !f.trim().is_empty()).map(|f| serde_json::from_str(f.strip_prefix("data: ").unwrap()).unwrap()).collect()
}

#[tokio::test]
async fn generate_in_both_styles() {
    let m = start(Flavor::Gemini).await;
    for (path, cred) in [(API, KEY), (VERTEX, TOKEN)] {
        let r = post(m.addr(), &format!("{path}:generateContent"), &[cred], &ask("hello world")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let b = r.json();
        assert_eq!(b["candidates"][0]["content"], json!({"role": "model", "parts": [{"text": "echo: hello world"}]}));
        assert_eq!(b["candidates"][0]["finishReason"], "STOP");
        assert_eq!(b["usageMetadata"]["promptTokenCount"], 2);
        assert_eq!(b["usageMetadata"]["candidatesTokenCount"], 3);
        assert_eq!(b["usageMetadata"]["totalTokenCount"], 5);
        assert_eq!(b["modelVersion"], "gemini-2.5-flash");
        assert!(b["responseId"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(r.header("x-ratelimit-limit-requests").is_none(), "Google sends no rate-limit headers");
    }
    // The key may come in the query too.
    let r = post(m.addr(), &format!("{API}:generateContent?key=AIza-q"), &[], &ask("q")).await;
    assert_eq!(r.status, 200);
    assert_eq!(m.stats().by_key.get("AIza-q"), Some(&1));
    assert_eq!(m.stats().by_model.get("gemini-2.5-flash"), Some(&3));
}

#[tokio::test]
async fn credentials_each_style_reads() {
    let mut cfg = MockConfig::new(Flavor::Gemini);
    cfg.require_key = Some("AIza-test".into());
    let m = start_with(cfg).await;
    let r = post(m.addr(), &format!("{API}:generateContent"), &[], &ask("x")).await;
    assert_eq!((r.status, r.json()["error"]["status"].as_str()), (403, Some("PERMISSION_DENIED")));
    let r = post(m.addr(), &format!("{API}:generateContent"), &[("x-goog-api-key", "wrong")], &ask("x")).await;
    let e = r.json();
    assert_eq!((r.status, e["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")));
    assert_eq!(e["error"]["details"][0]["reason"], "API_KEY_INVALID");
    // Vertex takes no API key header: a token is required.
    let r = post(m.addr(), &format!("{VERTEX}:generateContent"), &[KEY], &ask("x")).await;
    assert_eq!((r.status, r.json()["error"]["status"].as_str()), (401, Some("UNAUTHENTICATED")));
    let r = post(m.addr(), &format!("{VERTEX}:generateContent"), &[("authorization", "Bearer AIza-test")], &ask("x")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn sse_stream_text_and_tools() {
    let m = start(Flavor::Gemini).await;
    let r = post(m.addr(), &format!("{API}:streamGenerateContent?alt=sse"), &[KEY], &ask("hello stream world")).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
    let f = frames(&r);
    let text: String = f.iter().map(|fr| fr["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(text, "echo: hello stream world");
    assert!(f[..f.len() - 1].iter().all(|fr| fr["candidates"][0].get("finishReason").is_none()));
    let last = f.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 4);
    assert!(!r.text().contains("[DONE]"));

    let body = json!({"contents": [{"parts": [{"text": "[[tool:get_weather {\"city\":\"Paris\"}]] [[tool:now]]"}]}],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": {"type": "object"}}, {"name": "now"}]}]});
    let r = post(m.addr(), &format!("{API}:streamGenerateContent?alt=sse"), &[KEY], &body).await;
    let f = frames(&r);
    assert_eq!(f.len(), 1, "calls arrive whole in one frame");
    assert_eq!(
        f[0]["candidates"][0]["content"]["parts"],
        json!([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}, {"functionCall": {"name": "now", "args": {}}}])
    );
    // Without alt=sse: one JSON array.
    let r = post(m.addr(), &format!("{API}:streamGenerateContent"), &[KEY], &ask("a b")).await;
    assert!(r.json().as_array().is_some_and(|a| a.len() == 3), "{}", r.text());
}

#[tokio::test]
async fn tool_round_trip_and_pairing() {
    let m = start(Flavor::Gemini).await;
    let body = json!({"contents": [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}, {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "18C"}}}, {"functionResponse": {"name": "get_weather", "response": {"result": "20C"}}}]}]});
    let r = post(m.addr(), &format!("{API}:generateContent"), &[KEY], &body).await;
    assert_eq!(r.json()["candidates"][0]["content"]["parts"][0]["text"], "tool results: 18C | 20C");
    let mut short = body.clone();
    short["contents"][2]["parts"].as_array_mut().unwrap().pop();
    let r = post(m.addr(), &format!("{API}:generateContent"), &[KEY], &short).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("number of function response parts"));
    // Gemini 3 signs its calls and wants the signature back.
    let g3 = "/v1beta/models/gemini-3-pro-preview";
    let r = post(m.addr(), &format!("{g3}:generateContent"), &[KEY], &ask("[[tool:f]]")).await;
    assert!(r.json()["candidates"][0]["content"]["parts"][0]["thoughtSignature"].is_string());
    let r = post(m.addr(), &format!("{g3}:generateContent"), &[KEY], &body).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("thought_signature"));
    let mut signed = body.clone();
    signed["contents"][1]["parts"][0]["thoughtSignature"] = json!("skip_thought_signature_validator");
    assert_eq!(post(m.addr(), &format!("{g3}:generateContent"), &[KEY], &signed).await.status, 200);
}

#[tokio::test]
async fn errors_in_google_rpc_shape() {
    let m = start(Flavor::Gemini).await;
    for (code, status) in [
        (400, "INVALID_ARGUMENT"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
    ] {
        let r = post(m.addr(), &format!("{API}:generateContent"), &[KEY], &ask(&format!("[[error:{code}]]"))).await;
        assert_eq!(r.status, code);
        let e = &r.json()["error"];
        assert_eq!((e["code"].as_u64(), e["status"].as_str()), (Some(u64::from(code)), Some(status)), "{e}");
        assert!(e["message"].as_str().is_some_and(|s| !s.is_empty()));
    }
    let r = post(m.addr(), &format!("{API}:generateContent"), &[KEY], &ask("[[error:429]]")).await;
    assert_eq!(r.json()["error"]["details"][0]["retryDelay"], "1s");
    assert!(r.header("retry-after").is_none());
    let r = post(m.addr(), &format!("{API}:generateContent"), &[KEY], &ask("[[quota]]")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["details"][0]["@type"], "type.googleapis.com/google.rpc.QuotaFailure");
    let r = post(m.addr(), &format!("{API}:generateContent"), &[KEY], &ask("[[context]]")).await;
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("exceeds the maximum number of tokens allowed (1048576)"));
    let r = post(m.addr(), "/v1beta/models/no-such-model:generateContent", &[KEY], &ask("x")).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].as_str().unwrap().starts_with("models/no-such-model is not found"));
    let r = post(m.addr(), "/v1/chat/completions", &[KEY], &ask("x")).await;
    assert_eq!((r.status, r.header("content-type")), (404, Some("text/html; charset=UTF-8")));
    let r =
        post(m.addr(), &format!("{API}:generateContent"), &[KEY], &json!({"contents": [{"parts": [{"text": "x"}]}], "messages": []})).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("Unknown name \"messages\""));
    let r = post(m.addr(), &format!("{API}:generateContent"), &[KEY], &ask("[[filter]]")).await;
    let c = &r.json()["candidates"][0];
    assert_eq!((c["finishReason"].as_str(), c.get("content")), (Some("SAFETY"), None));
}

#[tokio::test]
async fn errors_after_the_stream_began_are_plain_json() {
    let m = start(Flavor::Gemini).await;
    let path = "/v1beta/models/gemini-2.5-flash+kind=late_stream_error:streamGenerateContent?alt=sse";
    let r = post(m.addr(), path, &[KEY], &ask("one two three")).await;
    assert_eq!(r.status, 200);
    let t = r.text();
    let (head, tail) = t.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("data: "));
    assert!(tail.starts_with("{\n  \"error\": {"), "{tail:?}");
    let e: Value = serde_json::from_str(tail).unwrap();
    assert_eq!(e["error"]["status"], "UNAVAILABLE");
}

#[tokio::test]
async fn embeddings_and_models() {
    let m = start(Flavor::Gemini).await;
    let e = "/v1beta/models/gemini-embedding-001";
    let body = json!({"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "alpha"}]}, "outputDimensionality": 4},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "beta"}]}}]});
    let r = post(m.addr(), &format!("{e}:batchEmbedContents"), &[KEY], &body).await;
    let b = r.json();
    assert_eq!(b["embeddings"][0]["values"].as_array().unwrap().len(), 4);
    assert_eq!(b["embeddings"][1]["values"].as_array().unwrap().len(), 16);
    let r = post(
        m.addr(),
        &format!("{e}:embedContent"),
        &[KEY],
        &json!({"content": {"parts": [{"text": "alpha"}]}, "outputDimensionality": 4}),
    )
    .await;
    assert_eq!(r.json()["embedding"]["values"], b["embeddings"][0]["values"], "deterministic");
    let mut wrong = body.clone();
    wrong["requests"][0]["model"] = json!("models/other");
    assert_eq!(post(m.addr(), &format!("{e}:batchEmbedContents"), &[KEY], &wrong).await.status, 400);
    let v = "/v1/projects/p/locations/us-central1/publishers/google/models/text-embedding-005:predict";
    let r = post(m.addr(), v, &[TOKEN], &json!({"instances": [{"content": "a b c"}], "parameters": {"outputDimensionality": 8}})).await;
    let p = &r.json()["predictions"][0]["embeddings"];
    assert_eq!((p["values"].as_array().unwrap().len(), p["statistics"]["token_count"].as_u64()), (8, Some(3)));

    let r = get(m.addr(), "/v1beta/models?pageSize=2", &[KEY]).await;
    let b = r.json();
    assert_eq!(b["models"].as_array().unwrap().len(), 2);
    assert_eq!(b["models"][0]["name"], "models/gemini-2.5-flash");
    let token = b["nextPageToken"].as_str().unwrap().to_string();
    let r = get(m.addr(), &format!("/v1beta/models?pageSize=10&pageToken={token}"), &[KEY]).await;
    let rest = r.json()["models"].as_array().unwrap().len();
    assert_eq!(rest, 3);
    assert!(r.json().get("nextPageToken").is_none());
    let r = get(m.addr(), "/v1beta/models/gemini-embedding-001", &[KEY]).await;
    assert_eq!(r.json()["supportedGenerationMethods"][0], "embedContent");
    let r = post(m.addr(), &format!("{API}:countTokens"), &[KEY], &ask("one two three")).await;
    assert_eq!(r.json()["totalTokens"], 3);
}

/// A JWT of `claims` in a service account's form (RS256); the mock checks the form and the claims, not the
/// signature.
fn jwt(claims: &Value) -> String {
    use base64::Engine as _;
    let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let head = json!({"alg": "RS256", "typ": "JWT"}).to_string();
    format!("{}.{}.{}", enc(head.as_bytes()), enc(claims.to_string().as_bytes()), enc(b"not-checked"))
}

#[tokio::test]
async fn the_token_endpoint_trades_an_assertion_for_a_token_vertex_accepts() {
    let m = start(Flavor::Gemini).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = |iat: i64, exp: i64| {
        json!({"iss": "gateway@p.iam.gserviceaccount.com", "scope": "https://www.googleapis.com/auth/cloud-platform",
            "aud": format!("http://{}/token", m.addr()), "iat": iat, "exp": exp})
    };
    let addr = m.addr();
    let exchange = |grant: &str, assertion: String| {
        let body = format!("grant_type={}&assertion={assertion}", grant.replace(':', "%3A"));
        async move { send(addr, "POST", "/token", &[("content-type", "application/x-www-form-urlencoded")], Some(&body)).await }
    };
    let jwt_bearer = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let r = exchange(jwt_bearer, jwt(&claims(now, now + 3600))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let token = b["access_token"].as_str().unwrap().to_string();
    assert_eq!((b["token_type"].as_str(), b["expires_in"].as_u64()), (Some("Bearer"), Some(3599)));
    assert_eq!(m.issued_tokens(), vec![token.clone()]);
    let bearer = format!("Bearer {token}");
    let r = post(m.addr(), &format!("{VERTEX}:generateContent"), &[("authorization", &bearer)], &ask("x")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A token in the mock's own form that it never issued is refused as Google refuses a revoked one.
    let r = post(m.addr(), &format!("{VERTEX}:generateContent"), &[("authorization", "Bearer ya29.mock-forged")], &ask("x")).await;
    assert_eq!((r.status, r.json()["error"]["status"].as_str()), (401, Some("UNAUTHENTICATED")));
    // Refusals come in Google's OAuth shape, not the APIs' RPC one.
    let r = exchange("refresh_token", jwt(&claims(now, now + 3600))).await;
    assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("unsupported_grant_type")));
    let r = exchange(jwt_bearer, jwt(&claims(now - 7200, now - 3600))).await;
    assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("invalid_grant")), "{}", r.text());
    let r = exchange(jwt_bearer, jwt(&claims(now, now + 7200))).await;
    assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("invalid_grant")), "longer than an hour: {}", r.text());
    let r = exchange(jwt_bearer, "not.a-jwt".into()).await;
    assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(m.issued_tokens().len(), 1, "a refused exchange issues nothing");
}
