//! The deterministic "model": every flavour parses its request into the small neutral [`Conversation`]
//! below and asks [`decide`] what to answer. Keeping the logic in one place means the four mocks answer
//! the same conversation the same way, which is what lets one conformance suite compare providers. The
//! exact rules are the crate-level docs' "Deterministic replies" section.

use crate::common::{sha256_hex, words, ApiError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// An attachment of a user message: an image, or a document (Anthropic `document` blocks).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Image {
    Inline {
        media_type: String,
        data: Vec<u8>,
    },
    Url(String),
    /// A text document the request grounds its answer in (Cohere's `documents`).
    TextDocument {
        title: Option<String>,
        text: String,
    },
    /// A document's bytes (a base64 source decoded, a text source's UTF-8).
    Document {
        media_type: String,
        data: Vec<u8>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ToolCall {
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Message {
    pub role: Role,
    pub texts: Vec<String>,
    pub images: Vec<Image>,
    pub tool_calls: Vec<ToolCall>,
    pub tool_results: Vec<String>,
}

impl Message {
    pub fn new(role: Role) -> Self {
        Message { role, texts: Vec::new(), images: Vec::new(), tool_calls: Vec::new(), tool_results: Vec::new() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) enum ToolChoice {
    #[default]
    Auto,
    None,
    Required,
    Named(String),
}

#[derive(Clone, Debug, PartialEq, Default)]
pub(crate) struct Conversation {
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<String>,
    /// Tool name → its parameter schema, for the flavours that read them (a forced call's arguments
    /// are built from it; see [`schema_instance`]).
    pub tool_schemas: std::collections::BTreeMap<String, serde_json::Value>,
    pub tool_choice: ToolChoice,
    pub max_tokens: Option<u64>,
    pub stop: Vec<String>,
    pub json_mode: bool,
    pub n: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    Length,
    ToolCalls,
    Filter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Usage {
    /// Every prompt token, cached ones included.
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reply {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish: Finish,
    /// The stop sequence that ended the text, if one did.
    pub stop_sequence: Option<String>,
    pub usage: Usage,
}

/// Prompt tokens by the mock's rule (words of the system prompt and all message texts).
pub(crate) fn prompt_tokens(conv: &Conversation) -> u64 {
    conv.system.iter().map(|s| words(s)).sum::<u64>()
        + conv.messages.iter().flat_map(|m| m.texts.iter().chain(m.tool_results.iter())).map(|t| words(t)).sum::<u64>()
}

/// N from the first `[[cached:N]]` in any text.
fn cached_tokens(conv: &Conversation) -> u64 {
    conv.system
        .iter()
        .chain(conv.messages.iter().flat_map(|m| m.texts.iter().chain(m.tool_results.iter())))
        .find_map(|t| directive_arg(t, "[[cached:").and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
}

/// The text between `open` and the next `]]`.
fn directive_arg<'a>(text: &'a str, open: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find("]]")?;
    Some(&text[start..start + len])
}

/// All well-formed `[[tool:NAME {json}]]` directives in order.
pub(crate) fn tool_directives(text: &str) -> Vec<ToolCall> {
    const OPEN: &str = "[[tool:";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find(OPEN) {
        let after = &rest[pos + OPEN.len()..];
        match parse_tool(after) {
            Some((call, used)) => {
                out.push(call);
                rest = &after[used..];
            }
            None => rest = after,
        }
    }
    out
}

/// Parses `NAME {json}]]` (JSON optional); returns the call and the bytes consumed.
fn parse_tool(s: &str) -> Option<(ToolCall, usize)> {
    let name_len = s.find(|c: char| c.is_whitespace() || c == ']' || c == '{').unwrap_or(s.len());
    let name = &s[..name_len];
    if name.is_empty() {
        return None;
    }
    let mut i = name_len;
    i += s[i..].len() - s[i..].trim_start().len();
    let mut arguments = "{}".to_string();
    if s[i..].starts_with('{') {
        let mut it = serde_json::Deserializer::from_str(&s[i..]).into_iter::<serde_json::Value>();
        match it.next() {
            Some(Ok(v)) if v.is_object() => {
                let used = it.byte_offset();
                arguments = s[i..i + used].to_string();
                i += used;
            }
            _ => return None,
        }
        i += s[i..].len() - s[i..].trim_start().len();
    }
    if !s[i..].starts_with("]]") {
        return None;
    }
    Some((ToolCall { name: name.to_string(), arguments }, i + 2))
}

fn image_note(img: &Image) -> String {
    match img {
        Image::Inline { media_type, data } => {
            let hex = sha256_hex(data);
            format!(" [image {media_type} {} bytes sha256={}]", data.len(), &hex[..16])
        }
        Image::Url(url) => format!(" [image-url {url}]"),
        Image::TextDocument { title, text } => {
            let hex = sha256_hex(text.as_bytes());
            format!(" [document {} {} bytes sha256={}]", title.as_deref().unwrap_or("untitled"), text.len(), &hex[..16])
        }
        Image::Document { media_type, data } => {
            let hex = sha256_hex(data);
            format!(" [document {media_type} {} bytes sha256={}]", data.len(), &hex[..16])
        }
    }
}

/// Decides the answer to a conversation: a reply, or an error the flavour renders. A prompt of more
/// than `context_window` tokens is refused before anything else is looked at.
pub(crate) fn decide(conv: &Conversation, context_window: Option<u64>) -> Result<Reply, ApiError> {
    let prompt = prompt_tokens(conv);
    if let Some(window) = context_window.filter(|w| prompt > *w) {
        return Err(ApiError::ContextLength { prompt_tokens: prompt, window: Some(window) });
    }
    let cached = cached_tokens(conv).min(prompt);
    let n = u64::from(conv.n.max(1));

    let trailing_results: Vec<&str> = {
        let mut out: Vec<&str> = Vec::new();
        for m in conv.messages.iter().rev() {
            if m.tool_results.is_empty() || !matches!(m.role, Role::Tool | Role::User) {
                break;
            }
            for r in m.tool_results.iter().rev() {
                out.push(r);
            }
        }
        out.reverse();
        out
    };

    let mut tool_calls = Vec::new();
    let mut finish = Finish::Stop;
    // `base` is what JSON mode wraps; `text` the plain answer.
    let (base, mut text) = if !trailing_results.is_empty() {
        let t = format!("tool results: {}", trailing_results.join(" | "));
        (t.clone(), t)
    } else {
        let last_user = conv.messages.iter().rev().find(|m| m.role == Role::User);
        let user_text = last_user.map(|m| m.texts.join(" ")).unwrap_or_default();
        if let Some(code) = directive_arg(&user_text, "[[error:").and_then(|c| c.trim().parse::<u16>().ok()) {
            if (400..=599).contains(&code) {
                return Err(ApiError::Status(code));
            }
        }
        if user_text.contains("[[quota]]") {
            return Err(ApiError::Quota);
        }
        if user_text.contains("[[context]]") {
            return Err(ApiError::ContextLength { prompt_tokens: prompt, window: None });
        }
        if user_text.contains("[[filter]]") {
            return Ok(Reply {
                text: String::new(),
                tool_calls: Vec::new(),
                finish: Finish::Filter,
                stop_sequence: None,
                usage: Usage { prompt, completion: 0, cached },
            });
        }
        tool_calls = tool_directives(&user_text);
        let mut t = format!("echo: {user_text}");
        if let Some(m) = last_user {
            for img in &m.images {
                t.push_str(&image_note(img));
            }
        }
        (user_text, t)
    };

    if tool_calls.is_empty() && !conv.tools.is_empty() {
        let forced = match &conv.tool_choice {
            ToolChoice::Required => conv.tools.first().cloned(),
            ToolChoice::Named(name) => Some(name.clone()),
            ToolChoice::Auto | ToolChoice::None => None,
        };
        if let Some(name) = forced {
            let arguments = match conv.tool_schemas.get(&name) {
                Some(schema) => schema_instance(schema, schema, &base, 0).to_string(),
                None => "{}".to_string(),
            };
            tool_calls.push(ToolCall { name, arguments });
        }
    }

    if !tool_calls.is_empty() {
        return Ok(Reply {
            text: String::new(),
            finish: Finish::ToolCalls,
            stop_sequence: None,
            usage: Usage { prompt, completion: 5 * tool_calls.len() as u64 * n, cached },
            tool_calls,
        });
    }

    if conv.json_mode {
        text = serde_json::json!({ "echo": base }).to_string();
    }

    let mut stop_sequence = None;
    let earliest =
        conv.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str()).map(|at| (at, s))).min_by_key(|(at, _)| *at);
    if let Some((at, seq)) = earliest {
        text.truncate(at);
        stop_sequence = Some(seq.clone());
    }
    if let Some(limit) = conv.max_tokens {
        let parts: Vec<&str> = text.split(' ').collect();
        if parts.len() as u64 > limit {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            text = parts[..limit].join(" ");
            finish = Finish::Length;
            stop_sequence = None;
        }
    }

    Ok(Reply { usage: Usage { prompt, completion: words(&text) * n, cached }, text, tool_calls, finish, stop_sequence })
}

/// The smallest value a JSON schema accepts, built from `text` (the user's text): an object of its
/// required properties only, a string `text` (an `enum`'s or `const`'s first value), a number or integer
/// the count of `text`'s words, `true`, an empty array (or one item when `minItems` asks), `null`.
/// `anyOf`/`oneOf` take their first branch; `$ref`s to `#/$defs/…` or `#/definitions/…` are followed
/// (pydantic puts nested models there), 16 deep at most.
pub(crate) fn schema_instance(schema: &serde_json::Value, root: &serde_json::Value, text: &str, depth: u32) -> serde_json::Value {
    use serde_json::{json, Value};
    if depth > 16 {
        return Value::Null;
    }
    let next = |s: &Value| schema_instance(s, root, text, depth + 1);
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = r.strip_prefix("#/").map(|p| p.split('/').try_fold(root, |v, k| v.get(k)));
        return match target.flatten() {
            Some(t) => next(t),
            None => Value::Null,
        };
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema.get(key).and_then(Value::as_array).and_then(|a| a.first()) {
            return next(first);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "object",
    };
    match kind {
        "object" => {
            let mut out = serde_json::Map::new();
            let props = schema.get("properties").and_then(Value::as_object);
            for name in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                let prop = props.and_then(|p| p.get(name)).cloned().unwrap_or(json!({}));
                out.insert(name.to_string(), next(&prop));
            }
            Value::Object(out)
        }
        "string" => Value::from(text),
        "integer" | "number" => Value::from(words(text)),
        "boolean" => Value::Bool(true),
        "array" => {
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let item = schema.get("items").cloned().unwrap_or(json!({}));
            Value::Array((0..min.min(8)).map(|_| next(&item)).collect())
        }
        _ => Value::Null,
    }
}

/// Text split after each space: `"echo: hi there"` -> `["echo: ", "hi ", "there"]`.
pub(crate) fn text_chunks(text: &str) -> Vec<&str> {
    text.split_inclusive(' ').collect()
}

/// Tool arguments in fragments of at most 8 characters.
pub(crate) fn arg_fragments(args: &str) -> Vec<String> {
    let chars: Vec<char> = args.chars().collect();
    chars.chunks(8).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Message {
        let mut m = Message::new(Role::User);
        m.texts.push(text.to_string());
        m
    }

    fn conv(msgs: Vec<Message>) -> Conversation {
        Conversation { messages: msgs, n: 1, ..Conversation::default() }
    }

    #[test]
    fn echo_and_usage() {
        let mut c = conv(vec![user("hello there")]);
        c.system.push("be brief".into());
        let r = decide(&c, None).unwrap();
        assert_eq!(r.text, "echo: hello there");
        assert_eq!(r.finish, Finish::Stop);
        assert_eq!(r.usage.prompt, 4);
        assert_eq!(r.usage.completion, 3);
    }

    #[test]
    fn images_are_noted() {
        let mut m = user("look");
        m.images.push(Image::Inline { media_type: "image/png".into(), data: b"abc".to_vec() });
        m.images.push(Image::Url("https://x/y.png".into()));
        let r = decide(&conv(vec![m]), None).unwrap();
        assert_eq!(r.text, "echo: look [image image/png 3 bytes sha256=ba7816bf8f01cfea] [image-url https://x/y.png]");
    }

    #[test]
    fn tool_directives_parse() {
        let calls =
            tool_directives(r#"do [[tool:get_weather {"city":"Paris"}]] and [[tool:now]] [[tool:bad {x]] [[tool:t2  { "a" : [1,2] } ]]"#);
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(calls[1].arguments, "{}");
        assert_eq!(calls[2].name, "t2");
        assert_eq!(calls[2].arguments, r#"{ "a" : [1,2] }"#);
        let r = decide(&conv(vec![user("[[tool:a]] [[tool:b {\"x\":1}]]")]), None).unwrap();
        assert_eq!(r.finish, Finish::ToolCalls);
        assert_eq!(r.usage.completion, 10);
        assert!(r.text.is_empty());
    }

    #[test]
    fn tool_results_win() {
        let mut a = Message::new(Role::Assistant);
        a.tool_calls.push(ToolCall { name: "x".into(), arguments: "{}".into() });
        let mut t1 = Message::new(Role::Tool);
        t1.tool_results.push("18C".into());
        let mut t2 = Message::new(Role::Tool);
        t2.tool_results.push("sunny".into());
        let r = decide(&conv(vec![user("[[tool:x]]"), a, t1, t2]), None).unwrap();
        assert_eq!(r.text, "tool results: 18C | sunny");
    }

    #[test]
    fn errors_and_filter() {
        assert_eq!(decide(&conv(vec![user("x [[error:429]]")]), None), Err(ApiError::Status(429)));
        assert!(matches!(decide(&conv(vec![user("[[context]]")]), None), Err(ApiError::ContextLength { .. })));
        let r = decide(&conv(vec![user("[[filter]]")]), None).unwrap();
        assert_eq!(r.finish, Finish::Filter);
        assert_eq!(r.text, "");
    }

    #[test]
    fn quota_and_context_window() {
        assert_eq!(decide(&conv(vec![user("x [[quota]]")]), None), Err(ApiError::Quota));
        // "[[error:N]]" comes first.
        assert_eq!(decide(&conv(vec![user("[[error:500]] [[quota]]")]), None), Err(ApiError::Status(500)));
        let c = conv(vec![user("one two three")]);
        assert!(decide(&c, Some(3)).is_ok(), "at the window is fine");
        assert_eq!(decide(&c, Some(2)), Err(ApiError::ContextLength { prompt_tokens: 3, window: Some(2) }));
        // The window is checked before the directives and applies to tool results too.
        assert!(matches!(decide(&conv(vec![user("a b [[quota]]")]), Some(1)), Err(ApiError::ContextLength { .. })));
        let mut t = Message::new(Role::Tool);
        t.tool_results.push("a long tool result".into());
        assert!(matches!(decide(&conv(vec![user("hi"), t]), Some(4)), Err(ApiError::ContextLength { prompt_tokens: 5, .. })));
    }

    #[test]
    fn limits() {
        let mut c = conv(vec![user("one two three four")]);
        c.max_tokens = Some(3);
        let r = decide(&c, None).unwrap();
        assert_eq!(r.text, "echo: one two");
        assert_eq!(r.finish, Finish::Length);
        let mut c = conv(vec![user("one two STOP three")]);
        c.stop = vec!["STOP".into(), "two".into()];
        let r = decide(&c, None).unwrap();
        assert_eq!(r.text, "echo: one ");
        assert_eq!(r.stop_sequence.as_deref(), Some("two"));
        assert_eq!(r.finish, Finish::Stop);
    }

    #[test]
    fn json_mode_and_cache() {
        let mut c = conv(vec![user("say \"hi\" [[cached:2]]")]);
        c.json_mode = true;
        let r = decide(&c, None).unwrap();
        assert_eq!(r.text, r#"{"echo":"say \"hi\" [[cached:2]]"}"#);
        assert_eq!(r.usage.cached, 2);
        assert_eq!(r.usage.prompt, 3);
    }

    #[test]
    fn forced_tool() {
        let mut c = conv(vec![user("hi")]);
        c.tools = vec!["a".into(), "b".into()];
        c.tool_choice = ToolChoice::Required;
        assert_eq!(decide(&c, None).unwrap().tool_calls[0].name, "a");
        c.tool_choice = ToolChoice::Named("b".into());
        assert_eq!(decide(&c, None).unwrap().tool_calls[0].name, "b");
    }

    #[test]
    fn forced_tool_arguments_follow_the_schema() {
        let mut c = conv(vec![user("three little words")]);
        c.tools = vec!["answer".into()];
        c.tool_choice = ToolChoice::Required;
        c.tool_schemas.insert(
            "answer".into(),
            serde_json::json!({"type": "object", "required": ["text", "count", "ok", "kind", "inner", "tags", "maybe"],
                "properties": {"text": {"type": "string"}, "count": {"type": "integer"}, "ok": {"type": "boolean"},
                    "kind": {"enum": ["b", "a"]}, "inner": {"$ref": "#/$defs/Inner"}, "tags": {"type": "array", "items": {"type": "string"}},
                    "maybe": {"anyOf": [{"type": "number"}, {"type": "null"}]}, "optional": {"type": "string"}},
                "$defs": {"Inner": {"type": "object", "properties": {"n": {"type": "number"}}, "required": ["n"]}}}),
        );
        let r = decide(&c, None).unwrap();
        let args: serde_json::Value = serde_json::from_str(&r.tool_calls[0].arguments).unwrap();
        assert_eq!(
            args,
            serde_json::json!({"text": "three little words", "count": 3, "ok": true, "kind": "b", "inner": {"n": 3}, "tags": [], "maybe": 3})
        );
        // Without a schema (or with no required properties) the call is `{}` as before.
        c.tool_schemas.clear();
        assert_eq!(decide(&c, None).unwrap().tool_calls[0].arguments, "{}");
    }

    #[test]
    fn documents_are_noted() {
        let mut m = user("read");
        m.images.push(Image::Document { media_type: "text/plain".into(), data: b"hello".to_vec() });
        let r = decide(&conv(vec![m]), None).unwrap();
        assert_eq!(r.text, "echo: read [document text/plain 5 bytes sha256=2cf24dba5fb0a30e]");
    }

    #[test]
    fn chunking() {
        assert_eq!(text_chunks("echo: hi there"), vec!["echo: ", "hi ", "there"]);
        assert_eq!(arg_fragments(r#"{"city":"Paris"}"#), vec![r#"{"city":"#, r#""Paris"}"#]);
    }
}
