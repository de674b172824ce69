//! Stage 8 of the request path, account: what a request reserved on the governance meters is settled from
//! its real usage once that is known, and its cost is worked out from the price table.
//!
//! A complete answer is settled at once. A stream is settled when it is over, however that happens: it
//! ends, it fails, or the client goes away and the stream is dropped. [`StreamMeter`] rides inside the
//! stream and settles on drop, so no way out of a stream can leave a reservation behind or go unbilled.
//! When the upstream reported no usage (a stream cut short never gets to its usage chunk), the tokens are
//! estimated from what was generated: a cut stream is billed for what it produced.
//!
//! Settling only touches in-memory meters, so it runs inside the drop; what goes to the usage ledger is
//! queued for a batch writer ([`Ledger`]) that shutdown drains.

use switchyard_wire::types::{ChatChunk, ChatRequest, Content, ContentPart, EmbeddingInput, EmbeddingsRequest, Usage};

use crate::batch::{BatchSettings, Batcher};
use crate::governance::meter::{Hold, Used};
use crate::governance::store::UsageRecord;
use crate::pricing::Price;

/// Tokens counted for one image whatever its size: about what providers bill for a high-detail image of
/// around a megapixel (OpenAI 765 for 1024×1024, Anthropic about 1,600 for 1.15 MP); the larger is taken,
/// since the estimate is an upper bound.
const IMAGE_TOKENS: u64 = 1_600;

/// A rough upper bound of a chat request's prompt tokens: about four characters a token for text (tool
/// definitions and calls included), a fixed count per image, a few tokens of framing per message.
pub fn prompt_tokens(req: &ChatRequest) -> u64 {
    let text = |s: &str| (s.len() as u64).div_ceil(4);
    let mut n = 0;
    for m in &req.messages {
        n += 4;
        match &m.content {
            Some(Content::Text(t)) => n += text(t),
            Some(Content::Parts(parts)) => {
                for p in parts {
                    n += match p {
                        ContentPart::Text { text: t } => text(t),
                        ContentPart::ImageUrl { .. } => IMAGE_TOKENS,
                        // A document's tokens follow its text, which its bytes bound from above.
                        ContentPart::File { file } => file.file_data.as_deref().map_or(IMAGE_TOKENS, text),
                        ContentPart::Other(v) => text(&v.to_string()),
                    };
                }
            }
            None => {}
        }
        for c in m.tool_calls.iter().flatten() {
            n += text(&c.function.name) + text(&c.function.arguments);
        }
    }
    if let Some(tools) = &req.tools {
        n += text(&serde_json::to_string(tools).unwrap_or_default());
    }
    n
}

/// The same bound for an embeddings request (token inputs are counted as they are).
pub fn embedding_tokens(req: &EmbeddingsRequest) -> u64 {
    let text = |s: &str| (s.len() as u64).div_ceil(4);
    match &req.input {
        EmbeddingInput::Text(t) => text(t),
        EmbeddingInput::Texts(v) => v.iter().map(|t| text(t)).sum(),
        EmbeddingInput::Tokens(v) => v.len() as u64,
        EmbeddingInput::TokenLists(v) => v.iter().map(|l| l.len() as u64).sum(),
    }
}

/// What a request holds on the meters while it runs.
#[derive(Debug, Default)]
pub struct Account {
    /// The request's own request and concurrency meters (`Governance::admit`).
    pub(crate) admission: Hold,
    /// The serving attempt's reservation (`Governance::reserve_attempt`).
    pub(crate) attempt: Hold,
    /// The serving target's price, when the table knows it.
    pub(crate) price: Option<Price>,
    /// The prompt's estimated tokens, for an answer that reports no usage.
    pub(crate) prompt_estimate: u64,
    /// Where the settled request goes for the usage ledger, with what is known of it before its usage.
    pub(crate) ledger: Option<(Ledger, UsageRecord)>,
}

/// The usage ledger's way in: a bounded queue a writer task drains into the store in batches (see
/// [`crate::batch`]). Sending never waits: when the writer cannot keep up the record is dropped and
/// counted (`switchyard_usage_ledger_dropped_total`), so a slow database never slows a request.
#[derive(Debug, Clone)]
pub struct Ledger(Batcher<UsageRecord>);

/// Records held at most in the queue: a minute of a busy gateway's requests.
pub const LEDGER_QUEUE: usize = 100_000;
/// Records written per store call, at most.
pub const LEDGER_BATCH: usize = 1_000;

impl Ledger {
    /// The queue and the writer that drains it into `store` in batches (what has arrived, at least every
    /// 200 ms). After [`Ledger::stop`] it writes what is queued and ends: await its handle at shutdown.
    pub fn start(store: std::sync::Arc<dyn crate::governance::store::GovernanceStore>) -> (Ledger, tokio::task::JoinHandle<()>) {
        let settings = BatchSettings {
            queue: LEDGER_QUEUE,
            batch: LEDGER_BATCH,
            linger: std::time::Duration::from_millis(200),
            dropped_metric: "switchyard_usage_ledger_dropped_total",
        };
        let (b, writer) = Batcher::start(settings, move |batch: Vec<UsageRecord>| {
            let store = std::sync::Arc::clone(&store);
            async move {
                let n = batch.len();
                match store.append_usage(batch).await {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::warn!(records = n, "the usage ledger could not be written: {e}");
                        n
                    }
                }
            }
        });
        (Ledger(b), writer)
    }

    /// Asks the writer to write what is queued and end.
    pub fn stop(&self) {
        self.0.stop();
    }

    fn send(&self, r: UsageRecord) {
        self.0.send(r);
    }
}

impl Account {
    /// Settles the meters from the answer's usage; the cost in USD when the target is priced.
    pub fn settle(self, usage: Option<&Usage>, generated_chars: u64) -> Option<f64> {
        let usage = usage.cloned().unwrap_or_else(|| Usage::new(self.prompt_estimate, generated_chars.div_ceil(4)));
        let cost = self.price.map(|p| p.cost(&usage));
        let tokens = usage.prompt_tokens + usage.completion_tokens;
        self.attempt.settle(Used { usd: cost.unwrap_or(0.0), tokens, request: true });
        self.admission.settle(Used { usd: 0.0, tokens: 0, request: true });
        if let Some((ledger, mut record)) = self.ledger {
            record.at_ms = crate::governance::meter::now_ms();
            record.prompt_tokens = usage.prompt_tokens;
            record.completion_tokens = usage.completion_tokens;
            record.cost_usd = cost.unwrap_or(0.0);
            ledger.send(record);
        }
        cost
    }

    /// A request that got no answer: its request counts, nothing was used.
    pub fn failed(self) {
        self.admission.settle(Used { usd: 0.0, tokens: 0, request: true });
    }
}

/// Watches a stream for its usage and for what it generates; settles the account when dropped.
pub struct StreamMeter {
    account: Option<Account>,
    usage: Option<Usage>,
    generated_chars: u64,
    /// Called with the stream's cost when it is settled (for the request log).
    on_settled: Option<Box<dyn FnOnce(Option<f64>) + Send>>,
}

impl std::fmt::Debug for StreamMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamMeter").field("account", &self.account).field("generated_chars", &self.generated_chars).finish()
    }
}

impl StreamMeter {
    pub fn new(account: Account) -> Self {
        StreamMeter { account: Some(account), usage: None, generated_chars: 0, on_settled: None }
    }

    /// Tells `f` the stream's cost once it is settled.
    pub fn on_settled(&mut self, f: impl FnOnce(Option<f64>) + Send + 'static) {
        self.on_settled = Some(Box::new(f));
    }

    pub fn observe(&mut self, chunk: &ChatChunk) {
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        for c in &chunk.choices {
            let d = &c.delta;
            self.generated_chars += d.content.as_ref().map_or(0, |t| t.len() as u64);
            for t in d.tool_calls.iter().flatten() {
                self.generated_chars += t.function.as_ref().and_then(|f| f.arguments.as_ref()).map_or(0, |a| a.len() as u64);
            }
        }
    }
}

impl Drop for StreamMeter {
    fn drop(&mut self) {
        if let Some(account) = self.account.take() {
            let cost = account.settle(self.usage.as_ref(), self.generated_chars);
            if let Some(f) = self.on_settled.take() {
                f(cost);
            }
        }
    }
}

/// USD as billionths, for headers and logs that must not round a cost of a fraction of a cent away.
pub fn nano_usd(usd: f64) -> u64 {
    (usd.max(0.0) * 1e9).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_estimates_count_text_images_and_tools() {
        let req: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "x".repeat(40)},
                {"role": "user", "content": [{"type": "text", "text": "abcd"}, {"type": "image_url", "image_url": {"url": "https://h/i.png"}}]}
            ]
        }))
        .unwrap();
        assert_eq!(prompt_tokens(&req), 4 + 10 + 4 + 1 + IMAGE_TOKENS);
    }
}
