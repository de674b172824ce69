//! Keeping the gateway's secrets out of what upstreams say.
//!
//! Upstream error text travels far: into `error.message`, `attempts[].message`, mid-stream error events and
//! WARN log lines. Providers put credentials into that text themselves ("Incorrect API key provided:
//! sk-proj-****abcd", a proxy echoing `Authorization: Bearer …`), so every piece of upstream text is cleaned
//! here before anything else sees it: [`clean`] is the one function the upstream layer passes text through.
//!
//! What is removed, each replaced by `[redacted]`:
//! - every configured secret (key values, and values of provider `headers` whose names look secret), whole
//!   or in part: any run of 8 or more bytes that also occurs in a secret;
//! - provider-style masks of a secret: a token holding `***`, or one that puts `...`/`…` before a
//!   secret's last four characters or after its first six;
//! - whatever follows `Bearer `, `Authorization: <scheme> `, `api-key:` (so `x-api-key:` too) and `key=`,
//!   `token=`, `secret=`, `password=` (so `?key=` and `api_key=`), known to us or not.
//!
//! Control characters become spaces, so an upstream cannot forge log lines, and the result is cut to
//! [`MAX_EXCERPT_BYTES`] on a character boundary.
//!
//! The known secrets are process-wide and only grow ([`remember`]): which secrets exist is a fact about the
//! process (every configuration loaded into it), not about one request, and upstream text is turned into
//! messages in places that hold no handle to a configuration (a codec error, a log line). A key dropped
//! from a later configuration is still a secret.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, RwLock};

/// Longest excerpt of upstream text the gateway passes on (bytes, cut on a character boundary).
pub const MAX_EXCERPT_BYTES: usize = 512;
/// What a secret is replaced by.
pub const REDACTED: &str = "[redacted]";
/// A run of this many bytes that also occurs in a secret is part of that secret (shorter runs match by
/// chance: `sk-proj-` begins every OpenAI project key).
const WINDOW: usize = 8;
/// Shorter secrets cannot be told apart from ordinary words, so they are not searched for.
const MIN_SECRET: usize = 4;
/// Only this much of a text is looked at: the excerpt is far shorter, and error paths must stay cheap
/// however much an upstream sends.
const MAX_SCAN_BYTES: usize = 16 << 10;

/// Names whose value (after `=` or `:`, quoted or not) is a credential, matched without regard to case
/// and only at the start of a word: `key` covers `?key=`, `api_key=` and `x-api-key:`, but not `monkey=`.
/// `bearer` and `authorization:` are handled apart because whitespace, not `=` or `:`, ends them.
const VALUE_NAMES: [&str; 7] = ["key", "api-key", "apikey", "token", "secret", "password", "passwd"];

/// The secrets one scrubber removes, prepared for a linear scan.
#[derive(Debug, Default, Clone)]
pub struct Scrubber {
    /// Every `WINDOW`-byte run of every secret at least that long.
    windows: HashSet<[u8; WINDOW]>,
    /// Secrets of `MIN_SECRET` to `WINDOW - 1` bytes, matched whole.
    short: Vec<Box<[u8]>>,
    /// Secrets of at least `WINDOW` bytes, for recognising masks of them.
    long: Vec<Box<str>>,
}

impl Scrubber {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut s = Scrubber::default();
        for secret in secrets {
            s.add(secret);
        }
        s
    }

    pub fn add(&mut self, secret: &str) {
        let b = secret.as_bytes();
        if b.len() < MIN_SECRET {
            return;
        }
        if b.len() < WINDOW {
            if !self.short.iter().any(|k| &k[..] == b) {
                self.short.push(b.into());
            }
            return;
        }
        for w in b.windows(WINDOW) {
            let mut run = [0u8; WINDOW];
            run.copy_from_slice(w);
            self.windows.insert(run);
        }
        if !self.long.iter().any(|k| &k[..] == secret) {
            self.long.push(secret.into());
        }
    }

    /// `text` without secrets or control characters, at most [`MAX_EXCERPT_BYTES`] long.
    pub fn clean(&self, text: &str) -> String {
        let text = cut(text, MAX_SCAN_BYTES);
        let mut spans = Vec::new();
        self.known_spans(text.as_bytes(), &mut spans);
        marker_spans(text, &mut spans);
        self.mask_spans(text, &mut spans);
        let redacted = replace_spans(text, spans);
        let printable: String = redacted.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        excerpt(&printable, MAX_EXCERPT_BYTES)
    }

    /// Byte ranges of `text` that occur in a known secret.
    fn known_spans(&self, text: &[u8], spans: &mut Vec<(usize, usize)>) {
        if !self.windows.is_empty() && text.len() >= WINDOW {
            let mut run = [0u8; WINDOW];
            for (i, w) in text.windows(WINDOW).enumerate() {
                run.copy_from_slice(w);
                if self.windows.contains(&run) {
                    // Overlapping runs of one fragment merge into the whole fragment.
                    spans.push((i, i + WINDOW));
                }
            }
        }
        for k in &self.short {
            let mut from = 0;
            while let Some(p) = find(&text[from..], k) {
                spans.push((from + p, from + p + k.len()));
                from += p + k.len();
            }
        }
    }

    /// Tokens that are a mask of a secret.
    fn mask_spans(&self, text: &str, spans: &mut Vec<(usize, usize)>) {
        for (start, end) in tokens(text) {
            // A sentence's full stop after a mask is not part of it.
            let token = text[start..end].trim_end_matches(['.', ',', ':', ';', '!', '?']);
            if token.contains("***") || self.masks_a_known_secret(token) {
                spans.push((start, start + token.len().max(1)));
            }
        }
    }

    /// `sk-...abcd`, `sk-proj-abc…`: visible ends of a known secret around an ellipsis.
    fn masks_a_known_secret(&self, token: &str) -> bool {
        let Some((head, tail)) = token.split_once("...").or_else(|| token.split_once('…')) else {
            return false;
        };
        let tail = tail.trim_start_matches(['.', '…']);
        self.long.iter().any(|k| (tail.len() >= 4 && k.ends_with(tail)) || (head.len() >= 6 && k.starts_with(head)))
    }
}

/// Ranges holding the value after a credential marker (`Bearer x`, `Authorization: Basic x`, `key=x`,
/// `"api_key": "x"`).
fn marker_spans(text: &str, spans: &mut Vec<(usize, usize)>) {
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    let word_start = |at: usize| at == 0 || !b[at - 1].is_ascii_alphanumeric();
    let mut push_value = |from: usize| {
        let end = value_end(b, from);
        if end > from {
            spans.push((from, end));
        }
    };
    for (at, _) in lower.match_indices("bearer") {
        let after = at + "bearer".len();
        let value = skip_spaces(b, after);
        if word_start(at) && value > after {
            push_value(value);
        }
    }
    for (at, _) in lower.match_indices("authorization:") {
        let mut value = skip_spaces(b, at + "authorization:".len());
        // `Basic x`, `Token x`: the scheme word stays, its credential goes (`Bearer` is handled above).
        let word = value_end(b, value);
        if word > value && b[value..word].iter().all(u8::is_ascii_alphabetic) && b.get(word).is_some_and(|c| *c == b' ') {
            value = skip_spaces(b, word);
        }
        push_value(value);
    }
    let quote = |i: usize| usize::from(matches!(b.get(i), Some(b'"' | b'\'')));
    for name in VALUE_NAMES {
        for (at, _) in lower.match_indices(name) {
            if !word_start(at) {
                continue;
            }
            let mut i = at + name.len();
            i += quote(i);
            i = skip_spaces(b, i);
            if !matches!(b.get(i), Some(b'=' | b':')) {
                continue;
            }
            i = skip_spaces(b, i + 1);
            i += quote(i);
            push_value(i);
        }
    }
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| *c == b' ' || *c == b'\t') {
        i += 1;
    }
    i
}

/// Where a credential value starting at `from` ends.
fn value_end(b: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < b.len() && !is_delimiter(b[i]) {
        i += 1;
    }
    i
}

fn is_delimiter(c: u8) -> bool {
    c.is_ascii_whitespace() || matches!(c, b'"' | b'\'' | b'`' | b'&' | b',' | b';' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'<' | b'>')
}

/// Byte ranges of the whitespace- and quote-separated tokens of `text`.
fn tokens(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let b = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() && is_delimiter(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            return None;
        }
        let start = i;
        i = value_end(b, i);
        Some((start, i))
    })
}

/// `text` with the union of `spans` replaced by [`REDACTED`], ranges widened to character boundaries.
fn replace_spans(text: &str, mut spans: Vec<(usize, usize)>) -> String {
    if spans.is_empty() {
        return text.to_string();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < spans.len() {
        let (mut start, mut end) = spans[i];
        i += 1;
        while i < spans.len() && spans[i].0 <= end {
            end = end.max(spans[i].1);
            i += 1;
        }
        while start > 0 && !text.is_char_boundary(start) {
            start -= 1;
        }
        while end < text.len() && !text.is_char_boundary(end) {
            end += 1;
        }
        let start = start.max(copied);
        out.push_str(&text[copied..start]);
        if !out.ends_with(REDACTED) {
            out.push_str(REDACTED);
        }
        copied = end.max(start);
    }
    out.push_str(&text[copied..]);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The first `max` bytes of `s`, cut back to a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` cut to at most `max` bytes (the ellipsis included) on a character boundary.
fn excerpt(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    format!("{}…", cut(s, max - '…'.len_utf8()))
}

static KNOWN: LazyLock<RwLock<Arc<Scrubber>>> = LazyLock::new(|| RwLock::new(Arc::new(Scrubber::default())));

/// Adds secrets to the process-wide set [`clean`] removes.
pub fn remember<'a>(secrets: impl IntoIterator<Item = &'a str>) {
    let mut known = KNOWN.write().unwrap_or_else(|e| e.into_inner());
    let s = Arc::make_mut(&mut known);
    for secret in secrets {
        s.add(secret);
    }
}

/// `text` without any secret the process knows, control characters or excess length: the form in which
/// upstream text may be logged or returned.
pub fn clean(text: &str) -> String {
    let known = KNOWN.read().unwrap_or_else(|e| e.into_inner()).clone();
    known.clean(text)
}

/// Whether a provider header of this name carries a credential (its value is then a secret to scrub).
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["auth", "key", "token", "secret", "password", "signature", "cookie"].iter().any(|w| n.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-proj-Zq3vN8xYtR2mK7pL9wBcD4fGhJ6sA1eU";

    fn s() -> Scrubber {
        Scrubber::new([KEY, "sk-ant-api03-4bX9qLmN2pR7tV5wY8zA", "tiny", "k"])
    }

    fn leaks(out: &str) -> bool {
        [KEY, "sk-ant-api03-4bX9qLmN2pR7tV5wY8zA"]
            .iter()
            .any(|k| k.as_bytes().windows(WINDOW).any(|w| out.as_bytes().windows(WINDOW).any(|o| o == w)))
    }

    #[test]
    fn removes_whole_keys_and_any_long_fragment_of_them() {
        let out = s().clean(&format!("Incorrect API key provided: {KEY}. Try again."));
        assert_eq!(out, "Incorrect API key provided: [redacted]. Try again.");
        // A fragment that is not a whole token, cut short at either end.
        let out = s().clean(&format!("key fragment x{}y here", &KEY[5..20]));
        assert!(!leaks(&out) && out.contains("[redacted]"), "{out}");
        let out = s().clean("the anthropic key 4bX9qLmN2pR7 leaked");
        assert_eq!(out, "the anthropic key [redacted] leaked");
        // A short key is found whole; one shorter than 4 bytes is not a secret we can look for.
        assert_eq!(s().clean("a tiny key and a k"), "a [redacted] key and a k");
    }

    #[test]
    fn removes_provider_style_masks() {
        let masked = format!("{}{}{}", &KEY[..8], "*".repeat(KEY.len() - 12), &KEY[KEY.len() - 4..]);
        let out = s().clean(&format!(
            "Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
        ));
        assert_eq!(
            out,
            "Incorrect API key provided: [redacted]. You can find your API key at https://platform.openai.com/account/api-keys."
        );
        let tail = &KEY[KEY.len() - 4..];
        assert_eq!(s().clean(&format!("key sk-...{tail} was revoked")), "key [redacted] was revoked");
        assert_eq!(s().clean(&format!("key sk-…{tail}")), "key [redacted]");
        assert_eq!(s().clean("key sk-proj-Zq3…"), "key [redacted]");
        // Any token with a run of asterisks is a mask, whoever's secret it is.
        assert_eq!(s().clean("token ab12****************wxyz rejected"), "token [redacted] rejected");
        // An ellipsis that masks nothing known is prose.
        assert_eq!(s().clean("wait... what"), "wait... what");
    }

    #[test]
    fn removes_what_follows_credential_markers_known_or_not() {
        let c = Scrubber::default();
        assert_eq!(c.clean("bad header Authorization: Bearer abc.def-123 sent"), "bad header Authorization: Bearer [redacted] sent");
        assert_eq!(c.clean("BEARER   xyz"), "BEARER   [redacted]");
        assert_eq!(c.clean("Authorization: Basic dXNlcjpwYXNz"), "Authorization: Basic [redacted]");
        assert_eq!(c.clean("x-api-key: abcd1234 is invalid"), "x-api-key: [redacted] is invalid");
        assert_eq!(c.clean("GET /v1beta/models?key=AIzaSyD-123&alt=sse failed"), "GET /v1beta/models?key=[redacted]&alt=sse failed");
        assert_eq!(
            c.clean("{\"api_key\": \"abc\", \"token\":\"t\"} password = hunter2"),
            "{\"api_key\": \"[redacted]\", \"token\":\"[redacted]\"} password = [redacted]"
        );
        assert_eq!(c.clean("API key: abc123 rejected"), "API key: [redacted] rejected");
        assert_eq!(c.clean("monkey=banana max_tokens: 5 tokens: 7"), "monkey=banana max_tokens: 5 tokens: 7");
        // Prose after "bearer" loses a word: the rules err towards removing too much.
        assert_eq!(c.clean("a bearer of bad news"), "a bearer [redacted] bad news");
        assert_eq!(c.clean("unbearer x"), "unbearer x");
    }

    #[test]
    fn excerpts_are_short_printable_and_cut_on_a_char_boundary() {
        let c = Scrubber::default();
        let long = "é".repeat(1000);
        let out = c.clean(&long);
        assert!(out.len() <= MAX_EXCERPT_BYTES && out.ends_with('…'), "{}", out.len());
        assert_eq!(c.clean("line one\nWARN forged\r\x1b[31m"), "line one WARN forged  [31m");
        // A secret past the scanned prefix cannot reach the excerpt.
        let far = format!("{}{KEY}", "x ".repeat(MAX_SCAN_BYTES));
        assert!(!leaks(&s().clean(&far)));
    }

    #[test]
    fn keys_adjacent_to_multibyte_text_and_repeated_are_removed_whole() {
        let out = s().clean(&format!("é{KEY}é {KEY}{KEY}"));
        assert_eq!(out, "é[redacted]é [redacted]");
    }

    #[test]
    fn the_process_wide_set_only_grows() {
        let a = "sk-process-wide-one-0123456789";
        let b = "sk-process-wide-two-9876543210";
        remember([a]);
        remember([b]);
        assert_eq!(clean(&format!("{a} {b}")), "[redacted] [redacted]");
    }

    #[test]
    fn secret_header_names() {
        for n in ["Authorization", "x-portkey-api-key", "X-Auth-Token", "cookie"] {
            assert!(is_secret_header(n), "{n}");
        }
        for n in ["HTTP-Referer", "X-Title", "anthropic-beta"] {
            assert!(!is_secret_header(n), "{n}");
        }
    }
}
