//! The canonical types: an OpenAI Chat Completions-shaped superset that every codec translates to and from.
//!
//! Why OpenAI-shaped: it is the shape most callers already speak, so the OpenAI-compatible path needs no
//! translation at all, and every other provider is a mapping to and from one well-known schema.
//! Unknown fields are kept in `extra` maps so that they reach OpenAI-compatible upstreams untouched.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// A JSON object of fields we do not model; passed through where the upstream speaks OpenAI.
pub type Extra = Map<String, Value>;

// ---------------------------------------------------------------------------------------------------------
// Chat request
// ---------------------------------------------------------------------------------------------------------

/// `POST /v1/chat/completions` body. `model` is the caller's model string (`provider/model` or bare).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Gateway extension: ordered `provider/model` targets to try after the primary. Never sent upstream.
    #[serde(default, skip_serializing)]
    pub fallbacks: Option<Vec<String>>,
    /// Everything else (logprobs, metadata, provider-specific knobs such as vLLM's `top_k`).
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatRequest {
    /// The output-token cap the caller asked for, preferring the newer field.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false)
    }

    /// Does any message carry an image by http(s) URL (which some providers need fetched and inlined)?
    pub fn has_http_image_urls(&self) -> bool {
        self.messages.iter().any(|m| match &m.content {
            Some(Content::Parts(parts)) => {
                parts.iter().any(|p| matches!(p, ContentPart::ImageUrl { image_url } if crate::image::is_http_url(&image_url.url)))
            }
            _ => false,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `stop`: a string or a list of strings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

/// Anthropic's signed thinking, as the blocks themselves (`thinking` with its `signature`,
/// `redacted_thinking` with its `data`), in the `extra` of an answer's message or delta and of an assistant
/// message sent back: a request with thinking on must return them unchanged beside its tool calls. Only the
/// Anthropic codecs read it; the others leave it out. (LiteLLM's name for the same.)
pub const THINKING_BLOCKS_FIELD: &str = "thinking_blocks";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    /// Deprecated OpenAI role; accepted and treated like `tool` where a provider needs a mapping.
    Function,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Message {
    pub role: Role,
    /// A string, a list of parts, or null (assistant messages that only call tools).
    #[serde(default, deserialize_with = "de_content", skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            refusal: None,
            extra: Extra::new(),
        }
    }

    /// All text of the message joined with newlines (image parts are skipped).
    pub fn joined_text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut out = String::new();
                for p in parts {
                    if let ContentPart::Text { text } = p {
                        if !out.is_empty() {
                            out.push('\n');
                        }
                        out.push_str(text);
                    }
                }
                out
            }
        }
    }
}

/// Distinguishes an explicit `null` from a missing field: both become `None`.
fn de_content<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Content>, D::Error> {
    Option::<Content>::deserialize(d)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// Hand-written so that an error inside a part names the part, instead of serde's untagged "did not match".
impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Content;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
                Ok(Content::Text(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(p) = seq.next_element::<ContentPart>()? {
                    parts.push(p);
                }
                Ok(Content::Parts(parts))
            }
        }
        d.deserialize_any(V)
    }
}

/// One part of a multi-part message. Unknown part types (`input_audio`, `file`, ...) are kept verbatim.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentPart {
    Text {
        text: String,
    },
    ImageUrl {
        image_url: ImageUrl,
    },
    /// OpenAI's `{"type":"file","file":{…}}`: a PDF or other document, inline as a data URL or by file id.
    File {
        file: FileData,
    },
    Other(Value),
}

impl<'de> Deserialize<'de> for ContentPart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Known {
            Text { text: String },
            ImageUrl { image_url: ImageUrl },
            File { file: FileData },
        }
        let v = Value::deserialize(d)?;
        match v.get("type").and_then(Value::as_str) {
            Some("text") | Some("image_url") | Some("file") => match Known::deserialize(v) {
                Ok(Known::Text { text }) => Ok(ContentPart::Text { text }),
                Ok(Known::ImageUrl { image_url }) => Ok(ContentPart::ImageUrl { image_url }),
                Ok(Known::File { file }) => Ok(ContentPart::File { file }),
                Err(e) => Err(de::Error::custom(e)),
            },
            Some(_) => Ok(ContentPart::Other(v)),
            None => Err(de::Error::custom("content part is missing its \"type\"")),
        }
    }
}

impl Serialize for ContentPart {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Known<'a> {
            Text { text: &'a str },
            ImageUrl { image_url: &'a ImageUrl },
            File { file: &'a FileData },
        }
        match self {
            ContentPart::Text { text } => Known::Text { text }.serialize(s),
            ContentPart::ImageUrl { image_url } => Known::ImageUrl { image_url }.serialize(s),
            ContentPart::File { file } => Known::File { file }.serialize(s),
            ContentPart::Other(v) => v.serialize(s),
        }
    }
}

/// A `file` part's payload. At least one of `file_data` and `file_id` is present (checked on decode).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(try_from = "RawFileData")]
pub struct FileData {
    /// A `data:<media type>;base64,<bytes>` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<String>,
    /// An id of OpenAI's Files API: only an OpenAI upstream can resolve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

#[derive(Deserialize)]
struct RawFileData {
    #[serde(default)]
    file_data: Option<String>,
    #[serde(default)]
    file_id: Option<String>,
    #[serde(default)]
    filename: Option<String>,
}

impl TryFrom<RawFileData> for FileData {
    type Error = &'static str;
    fn try_from(r: RawFileData) -> Result<Self, Self::Error> {
        if r.file_data.is_none() && r.file_id.is_none() {
            return Err("a file part needs `file.file_data` (a base64 data URL) or `file.file_id`");
        }
        Ok(FileData { file_data: r.file_data, file_id: r.file_id, filename: r.filename })
    }
}

impl FileData {
    /// The media type and base64 payload of an inline `file_data` data URL.
    pub fn inline(&self) -> Option<(&str, &str)> {
        let rest = self.file_data.as_deref()?.strip_prefix("data:")?;
        let (meta, data) = rest.split_once(',')?;
        let media = meta.strip_suffix(";base64")?;
        Some((if media.is_empty() { "application/octet-stream" } else { media }, data))
    }
}

/// `image_url`: an object `{url, detail}`; Mistral-style plain strings are accepted on input.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl<'de> Deserialize<'de> for ImageUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Url(String),
            Obj {
                url: String,
                #[serde(default)]
                detail: Option<String>,
            },
        }
        Ok(match Either::deserialize(d)? {
            Either::Url(url) => ImageUrl { url, detail: None },
            Either::Obj { url, detail } => ImageUrl { url, detail },
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: `none | auto | required` or `{"type":"function","function":{"name":…}}`.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Function(String),
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => match s.as_str() {
                "none" => Ok(ToolChoice::None),
                "auto" => Ok(ToolChoice::Auto),
                "required" | "any" => Ok(ToolChoice::Required),
                other => Err(de::Error::custom(format!(
                    "tool_choice must be \"none\", \"auto\", \"required\" or an object naming a function, got \"{other}\""
                ))),
            },
            Value::Object(o) => o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .map(|n| ToolChoice::Function(n.to_string()))
                .ok_or_else(|| de::Error::custom("tool_choice object must be {\"type\":\"function\",\"function\":{\"name\":…}}")),
            _ => Err(de::Error::custom("tool_choice must be a string or an object")),
        }
    }
}

impl Serialize for ToolChoice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ToolChoice::None => s.serialize_str("none"),
            ToolChoice::Auto => s.serialize_str("auto"),
            ToolChoice::Required => s.serialize_str("required"),
            ToolChoice::Function(name) => serde_json::json!({"type": "function", "function": {"name": name}}).serialize(s),
        }
    }
}

/// `response_format`: `{"type":"text"|"json_object"|"json_schema","json_schema":{name,schema,strict}}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchemaFormat>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// An assistant's tool call. `arguments` is a JSON **string**, as on OpenAI's wire.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

// ---------------------------------------------------------------------------------------------------------
// Chat response
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    FunctionCall,
    /// A value outside OpenAI's set, kept as the upstream said it.
    Other(String),
}

impl FinishReason {
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::FunctionCall => "function_call",
            FinishReason::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            "function_call" => FinishReason::FunctionCall,
            other => FinishReason::Other(other.to_string()),
        }
    }
}

impl Serialize for FinishReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FinishReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(FinishReason::parse(&s))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ChatResponse {
    pub id: String,
    #[serde(default = "chat_completion_object")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

fn chat_completion_object() -> String {
    "chat.completion".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    pub message: ResponseMessage,
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ResponseMessage {
    #[serde(default = "assistant_role")]
    pub role: Role,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

fn assistant_role() -> Role {
    Role::Assistant
}

impl Default for ResponseMessage {
    fn default() -> Self {
        ResponseMessage { role: Role::Assistant, content: None, tool_calls: None, refusal: None, extra: Extra::new() }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Usage {
    pub fn new(prompt: u64, completion: u64) -> Self {
        Usage { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, ..Usage::default() }
    }

    pub fn with_cached(mut self, cached: u64) -> Self {
        self.prompt_tokens_details = Some(PromptTokensDetails { cached_tokens: Some(cached), extra: Extra::new() });
        self
    }

    pub fn cached_tokens(&self) -> Option<u64> {
        self.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens)
    }

    /// Prompt tokens written to the provider's prompt cache (Anthropic's `cache_creation_input_tokens`,
    /// Bedrock's `cacheWriteInputTokens`), as `prompt_tokens_details.cache_write_tokens`, the name newer
    /// OpenAI SDKs use. Nothing is added for zero.
    pub fn with_cache_writes(mut self, written: u64) -> Self {
        if written > 0 {
            self.prompt_tokens_details.get_or_insert_with(Default::default).extra.insert(CACHE_WRITE_FIELD.into(), written.into());
        }
        self
    }

    /// What [`Usage::with_cache_writes`] recorded; 0 when nothing was written.
    pub fn cache_write_tokens(&self) -> u64 {
        self.prompt_tokens_details.as_ref().and_then(|d| d.extra.get(CACHE_WRITE_FIELD)).and_then(Value::as_u64).unwrap_or(0)
    }
}

const CACHE_WRITE_FIELD: &str = "cache_write_tokens";

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct PromptTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    #[serde(flatten)]
    pub extra: Extra,
}

// ---------------------------------------------------------------------------------------------------------
// Streaming chunks
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ChatChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default = "chunk_object")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Present (possibly `null`) on every chunk when usage was asked for; the totals ride on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

fn chunk_object() -> String {
    "chat.completion.chunk".to_string()
}

impl ChatChunk {
    /// An empty chunk carrying this stream's identity, to be filled by a decoder.
    pub fn new(id: &str, created: i64, model: &str) -> Self {
        ChatChunk {
            id: id.to_string(),
            object: chunk_object(),
            created,
            model: model.to_string(),
            choices: Vec::new(),
            usage: None,
            system_fingerprint: None,
            extra: Extra::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    /// Azure sends content-filter-only chunks without a delta; those deserialize to an empty delta.
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A fragment of a streamed tool call. Only the first fragment of a call carries `id`, `type` and name.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

// ---------------------------------------------------------------------------------------------------------
// Embeddings and models
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: EmbeddingInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing)]
    pub fallbacks: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `input`: a string, a list of strings, a token list, or a list of token lists.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

impl EmbeddingInput {
    /// The inputs as texts, for providers that take text only; `None` for token inputs.
    pub fn texts(&self) -> Option<Vec<&str>> {
        match self {
            EmbeddingInput::Text(t) => Some(vec![t.as_str()]),
            EmbeddingInput::Texts(v) => Some(v.iter().map(String::as_str).collect()),
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenLists(_) => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct EmbeddingsResponse {
    #[serde(default = "list_object")]
    pub object: String,
    pub data: Vec<Embedding>,
    pub model: String,
    #[serde(default)]
    pub usage: EmbeddingsUsage,
    #[serde(flatten)]
    pub extra: Extra,
}

impl EmbeddingsResponse {
    /// The OpenAI-shaped answer for vectors a provider returned as floats: in order, each as a float array,
    /// or as base64 little-endian `f32`s when the caller asked for `encoding_format: base64` (what OpenAI
    /// sends then, and what its SDKs decode).
    pub fn from_vectors(vectors: Vec<Vec<f64>>, model: &str, prompt_tokens: u64, base64: bool) -> Self {
        let data = vectors
            .into_iter()
            .enumerate()
            .map(|(i, v)| Embedding {
                object: "embedding".to_string(),
                index: u32::try_from(i).unwrap_or(u32::MAX),
                embedding: if base64 { Value::String(floats_to_base64(&v)) } else { Value::from(v) },
            })
            .collect();
        EmbeddingsResponse {
            object: "list".to_string(),
            data,
            model: model.to_string(),
            usage: EmbeddingsUsage { prompt_tokens, total_tokens: prompt_tokens },
            extra: Extra::new(),
        }
    }
}

/// Floats as OpenAI's base64 embedding: little-endian `f32`s.
pub fn floats_to_base64(v: &[f64]) -> String {
    use base64::Engine as _;
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for &x in v {
        bytes.extend_from_slice(&(x as f32).to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn list_object() -> String {
    "list".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Embedding {
    #[serde(default = "embedding_object")]
    pub object: String,
    pub index: u32,
    /// A list of floats, or a base64 string with `encoding_format: "base64"`.
    pub embedding: Value,
}

fn embedding_object() -> String {
    "embedding".to_string()
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct EmbeddingsUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ModelList {
    #[serde(default = "list_object")]
    pub object: String,
    pub data: Vec<ModelInfo>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ModelInfo {
    pub id: String,
    #[serde(default = "model_object")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub owned_by: String,
}

fn model_object() -> String {
    "model".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_roundtrip_keeps_unknown_fields_and_drops_fallbacks() {
        let body = r#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":[{"type":"text","text":"hi"},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}},
            {"type":"input_audio","input_audio":{"data":"x","format":"wav"}}]}],
            "logprobs":true,"top_k":5,"fallbacks":["a/b"],"stop":"\n"}"#;
        let req: ChatRequest = serde_json::from_str(body).unwrap();
        assert_eq!(req.fallbacks.as_deref(), Some(&["a/b".to_string()][..]));
        assert_eq!(req.extra.get("top_k"), Some(&Value::from(5)));
        let out = serde_json::to_value(&req).unwrap();
        assert!(out.get("fallbacks").is_none());
        assert_eq!(out["logprobs"], Value::Bool(true));
        assert_eq!(out["messages"][0]["content"][2]["type"], "input_audio");
        assert_eq!(out["messages"][0]["content"][1]["image_url"]["detail"], "low");
        assert_eq!(out["stop"], "\n");
    }

    #[test]
    fn image_url_accepts_plain_string() {
        let p: ContentPart = serde_json::from_str(r#"{"type":"image_url","image_url":"https://x/y.png"}"#).unwrap();
        assert_eq!(p, ContentPart::ImageUrl { image_url: ImageUrl { url: "https://x/y.png".into(), detail: None } });
    }

    #[test]
    fn tool_choice_forms() {
        let t: ToolChoice = serde_json::from_str(r#"{"type":"function","function":{"name":"f"}}"#).unwrap();
        assert_eq!(t, ToolChoice::Function("f".into()));
        assert_eq!(serde_json::from_str::<ToolChoice>("\"required\"").unwrap(), ToolChoice::Required);
        assert!(serde_json::from_str::<ToolChoice>("\"sometimes\"").is_err());
    }

    #[test]
    fn finish_reason_keeps_unknown_values() {
        let f: FinishReason = serde_json::from_str("\"model_length\"").unwrap();
        assert_eq!(f, FinishReason::Other("model_length".into()));
        assert_eq!(serde_json::to_string(&FinishReason::ToolCalls).unwrap(), "\"tool_calls\"");
    }

    #[test]
    fn content_part_without_type_is_an_error() {
        assert!(serde_json::from_str::<ContentPart>(r#"{"text":"x"}"#).is_err());
    }
}
