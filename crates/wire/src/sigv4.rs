//! AWS Signature Version 4: signing a [`WireRequest`] for an AWS service (Bedrock), and checking a signed
//! request against a known secret (the Bedrock mock does that, the way AWS does).
//!
//! Why it is written here rather than taken from the `aws-sigv4` crate: that crate brings the smithy runtime
//! (`aws-smithy-runtime-api`, `aws-smithy-http`, `aws-types`, their own HTTP types) into a crate whose rule is
//! to stay pure and small, while what we need is one canonical request and one HMAC chain over `hmac` and
//! `sha2`, both already in the lock. It is tested against AWS's published SigV4 test suite and against the
//! signatures botocore computes for the same Bedrock requests.
//!
//! The one rule that breaks most hand-written signers: for every service but S3 the canonical URI encodes
//! each path segment *again*, starting from the path as it goes on the wire. A model id
//! `anthropic.claude-3-5-haiku-20241022-v1:0` travels as `…v1%3A0`, so the canonical URI holds `…v1%253A0`;
//! an inference-profile ARN's `/` travels as `%2F` and is signed as `%252F`. [`canonical_uri`] takes the
//! wire path and does exactly that.
//!
//! What is signed: `host` (from the URL), `content-type` when the request has one, and every `x-amz-*`
//! header (`x-amz-date`, and `x-amz-security-token` for temporary credentials), as botocore signs them for
//! Bedrock. Other headers (`traceparent`, configured extra headers) travel unsigned, which AWS allows, so
//! the engine may add them after signing. The payload is hashed but not sent as `x-amz-content-sha256`:
//! only S3 wants that header.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::WireError;
use crate::spec::{Method, WireRequest};

/// The only algorithm SigV4 defines for header signing.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// How far a signed request's `x-amz-date` may be from the verifier's clock (AWS allows 15 minutes).
pub const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

/// Re-exported so signing code needs one import; the type lives with the other shared types in `spec`.
pub use crate::spec::AwsCredentials;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("cannot sign a request to \"{url}\": {reason}")]
    Url { url: String, reason: &'static str },
    #[error("cannot sign at unix time {0}: SigV4 dates are the years 1970 to 9999")]
    Time(i64),
}

impl From<SignError> for WireError {
    fn from(e: SignError) -> Self {
        WireError::unsupported(e.to_string(), None)
    }
}

/// Signs `req` in place: removes any earlier signature (a retry signs again, with a new date), adds
/// `x-amz-date`, `x-amz-security-token` for temporary credentials, and `authorization`.
pub fn sign(req: &mut WireRequest, creds: &AwsCredentials, region: &str, service: &str, now_unix: i64) -> Result<(), SignError> {
    let parts = UrlParts::parse(&req.url)?;
    let amz_date = amz_date(now_unix)?;
    req.headers.retain(|(name, _)| !(name.eq_ignore_ascii_case("authorization") || is_amz_header(name)));
    req.headers.push(("x-amz-date".to_string(), amz_date.clone()));
    if let Some(token) = &creds.session_token {
        req.headers.push(("x-amz-security-token".to_string(), token.clone()));
    }
    let mut signed: Vec<(String, String)> = vec![("host".to_string(), parts.host.clone())];
    for (name, value) in &req.headers {
        if name.eq_ignore_ascii_case("content-type") || is_amz_header(name) {
            signed.push((name.to_ascii_lowercase(), value.clone()));
        }
    }
    let method = match req.method {
        Method::Get => "GET",
        Method::Post => "POST",
    };
    let canonical = canonical_request(method, parts.path, parts.query, &signed, &hex(&Sha256::digest(&req.body)));
    let scope = Scope { date: &amz_date[..8], region, service };
    let signature = signature(&creds.secret_access_key, &scope, &amz_date, &canonical.request);
    req.headers.push((
        "authorization".to_string(),
        format!(
            "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={signature}",
            creds.access_key_id,
            scope.text(),
            canonical.signed_headers
        ),
    ));
    Ok(())
}

fn is_amz_header(name: &str) -> bool {
    name.len() > 6 && name[..6].eq_ignore_ascii_case("x-amz-")
}

/// A credential scope: `<yyyymmdd>/<region>/<service>/aws4_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope<'a> {
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

impl Scope<'_> {
    pub fn text(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.date, self.region, self.service)
    }
}

/// The canonical request and the `SignedHeaders` list it implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    pub request: String,
    pub signed_headers: String,
}

/// Builds the canonical request. `path` and `query` are as they go on the wire (already percent-encoded);
/// `headers` are the ones to sign, any case, repeated names allowed (their values are joined with `,` in
/// the order given).
pub fn canonical_request(method: &str, path: &str, query: &str, headers: &[(String, String)], payload_hash: &str) -> Canonical {
    let mut hs: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.trim().to_ascii_lowercase(), collapse_spaces(v))).collect();
    // Stable: repeated names keep their values in the order they were given.
    hs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut joined: Vec<(String, String)> = Vec::with_capacity(hs.len());
    for (name, value) in hs {
        match joined.last_mut() {
            Some((last, values)) if *last == name => {
                values.push(',');
                values.push_str(&value);
            }
            _ => joined.push((name, value)),
        }
    }
    let mut request = String::with_capacity(256 + path.len());
    request.push_str(method);
    request.push('\n');
    request.push_str(&canonical_uri(path));
    request.push('\n');
    request.push_str(&canonical_query(query));
    request.push('\n');
    for (name, value) in &joined {
        request.push_str(name);
        request.push(':');
        request.push_str(value);
        request.push('\n');
    }
    request.push('\n');
    let signed_headers = joined.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(";");
    request.push_str(&signed_headers);
    request.push('\n');
    request.push_str(payload_hash);
    Canonical { request, signed_headers }
}

/// The canonical URI of a non-S3 request: the path with dot segments and empty segments removed, each
/// segment URI-encoded (so a `%` already on the wire becomes `%25`). An empty path is `/`.
pub fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 16);
    for s in &segments {
        out.push('/');
        uri_encode_into(s, &mut out);
    }
    if out.is_empty() || (path.ends_with('/') && !segments.is_empty()) {
        out.push('/');
    }
    out
}

/// The canonical query: each name and value decoded from the wire and encoded strictly, pairs sorted by
/// name, then value.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&percent_decode(k)), uri_encode(&percent_decode(v)))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// The string to sign for a canonical request.
pub fn string_to_sign(amz_date: &str, scope: &Scope<'_>, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{amz_date}\n{}\n{}", scope.text(), hex(&Sha256::digest(canonical_request.as_bytes())))
}

/// The hex signature of a canonical request.
pub fn signature(secret: &str, scope: &Scope<'_>, amz_date: &str, canonical_request: &str) -> String {
    let key = signing_key(secret, scope);
    hex(&hmac(&key, string_to_sign(amz_date, scope, canonical_request).as_bytes()))
}

/// `HMAC("AWS4" + secret, date)` → region → service → `aws4_request`.
pub fn signing_key(secret: &str, scope: &Scope<'_>) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), scope.date.as_bytes());
    let k_region = hmac(&k_date, scope.region.as_bytes());
    let k_service = hmac(&k_region, scope.service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; 32],
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// SigV4's URI encoding: everything but `A-Z a-z 0-9 - _ . ~` as `%XX` (upper-case hex), UTF-8 bytes each.
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    uri_encode_into(s, &mut out);
    out
}

fn uri_encode_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hi = char::from(b[i + 1]).to_digit(16);
            let lo = char::from(b[i + 2]).to_digit(16);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Collapses runs of spaces to one and trims, as the canonical header value wants.
fn collapse_spaces(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `YYYYMMDDTHHMMSSZ` for a unix time.
pub fn amz_date(now_unix: i64) -> Result<String, SignError> {
    if !(0..=253_402_300_799).contains(&now_unix) {
        return Err(SignError::Time(now_unix));
    }
    let days = now_unix.div_euclid(86_400);
    let secs = now_unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    Ok(format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", secs / 3600, (secs % 3600) / 60, secs % 60))
}

/// The unix time of an `x-amz-date` value, if it is one.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' || !s[..8].bytes().chain(s[9..15].bytes()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The pieces of an absolute URL that signing needs.
struct UrlParts<'a> {
    /// `host[:port]`, lowercase, without the scheme's default port (as HTTP clients send `Host`).
    host: String,
    path: &'a str,
    query: &'a str,
}

impl<'a> UrlParts<'a> {
    fn parse(url: &'a str) -> Result<Self, SignError> {
        let bad = |reason| SignError::Url { url: url.to_string(), reason };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("it is not an absolute http(s) URL"))?;
        let rest = rest.split('#').next().unwrap_or(rest);
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..auth_end];
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if authority.is_empty() {
            return Err(bad("it has no host"));
        }
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "https" => ":443",
            "http" => ":80",
            _ => return Err(bad("only http and https URLs can be signed")),
        };
        let host = authority.strip_suffix(default_port).unwrap_or(authority).to_ascii_lowercase();
        let tail = &rest[auth_end..];
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        Ok(UrlParts { host, path, query })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Verifying (what AWS does on its side; the Bedrock mock uses it)
// ---------------------------------------------------------------------------------------------------------

/// Why a signed request was refused, each as AWS words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No `Authorization` header (AWS: `MissingAuthenticationTokenException`).
    #[error("Missing Authentication Token")]
    Missing,
    /// An `Authorization` header that is not a SigV4 one, or is missing a part.
    #[error("Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters. Authorization={0}")]
    Malformed(String),
    /// No or a bad `x-amz-date`.
    #[error("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")]
    NoDate,
    /// The access key id is not known (AWS: `UnrecognizedClientException`).
    #[error("The security token included in the request is invalid.")]
    UnknownKey(String),
    #[error("Credential should be scoped to a valid region.")]
    WrongRegion,
    #[error("Credential should be scoped to correct service: '{0}'.")]
    WrongService(String),
    #[error("Signature expired: {amz_date} is now earlier or later than the allowed 15 minutes around the server's time.")]
    Expired { amz_date: String },
    #[error("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{scope}' != '{day}', from '{amz_date}'.")]
    ScopeDate { scope: String, day: String, amz_date: String },
    /// A header the signature names did not arrive, or `host`, `x-amz-date` were not signed.
    #[error("{0}")]
    Unsigned(String),
    /// The signature is not the one the secret gives (AWS: `InvalidSignatureException`).
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )]
    Mismatch,
}

impl VerifyError {
    /// The AWS error shape (the `x-amzn-ErrorType`) AWS answers this with, always status 403.
    pub fn aws_type(&self) -> &'static str {
        match self {
            VerifyError::Missing => "MissingAuthenticationTokenException",
            VerifyError::UnknownKey(_) => "UnrecognizedClientException",
            VerifyError::Malformed(_) | VerifyError::NoDate => "IncompleteSignatureException",
            _ => "InvalidSignatureException",
        }
    }
}

/// The parts of a SigV4 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    pub access_key_id: &'a str,
    pub scope: Scope<'a>,
    pub signed_headers: Vec<&'a str>,
    pub signature: &'a str,
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request, SignedHeaders=a;b, Signature=hex`.
pub fn parse_authorization(value: &str) -> Result<Authorization<'_>, VerifyError> {
    let bad = || VerifyError::Malformed(value.to_string());
    let rest = value.trim().strip_prefix(ALGORITHM).ok_or_else(bad)?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or_else(bad)?;
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "SignedHeaders" => signed = Some(v.trim()),
            "Signature" => signature = Some(v.trim()),
            _ => return Err(bad()),
        }
    }
    let (credential, signed, signature) = (credential.ok_or_else(bad)?, signed.ok_or_else(bad)?, signature.ok_or_else(bad)?);
    let mut c = credential.split('/');
    let (Some(access_key_id), Some(date), Some(region), Some(service), Some("aws4_request"), None) =
        (c.next(), c.next(), c.next(), c.next(), c.next(), c.next())
    else {
        return Err(bad());
    };
    if access_key_id.is_empty() || signed.is_empty() {
        return Err(bad());
    }
    Ok(Authorization { access_key_id, scope: Scope { date, region, service }, signed_headers: signed.split(';').collect(), signature })
}

/// A request as a verifier received it.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    /// Every header received, any case (`host` included).
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Checks a received request's SigV4 signature as AWS does: the scope must name `region` and `service`,
/// `x-amz-date` must be within [`MAX_CLOCK_SKEW_SECS`] of `now_unix`, `host` and `x-amz-date` must be
/// signed, and the signature must be the one `secret_for` gives for the access key id. Returns the access
/// key id.
pub fn verify<'a>(
    req: &Received<'a>,
    region: &str,
    service: &str,
    now_unix: i64,
    secret_for: impl Fn(&str) -> Option<String>,
) -> Result<String, VerifyError> {
    let header = |name: &str| req.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let value = header("authorization").ok_or(VerifyError::Missing)?;
    let auth = parse_authorization(value)?;
    let amz_date = header("x-amz-date").ok_or(VerifyError::NoDate)?;
    let when = parse_amz_date(amz_date).ok_or(VerifyError::NoDate)?;
    let secret = secret_for(auth.access_key_id).ok_or_else(|| VerifyError::UnknownKey(auth.access_key_id.to_string()))?;
    if auth.scope.region != region {
        return Err(VerifyError::WrongRegion);
    }
    if auth.scope.service != service {
        return Err(VerifyError::WrongService(service.to_string()));
    }
    if (now_unix - when).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(VerifyError::Expired { amz_date: amz_date.to_string() });
    }
    for must in ["host", "x-amz-date"] {
        if !auth.signed_headers.contains(&must) {
            return Err(VerifyError::Unsigned(format!("'{must}' must be a 'SignedHeader' in the AWS Authorization.")));
        }
    }
    let mut signed: Vec<(String, String)> = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let mut found = false;
        for (n, v) in req.headers {
            if n.eq_ignore_ascii_case(name) {
                signed.push((n.to_ascii_lowercase(), v.clone()));
                found = true;
            }
        }
        if !found {
            return Err(VerifyError::Unsigned(format!("The header '{name}' is named in SignedHeaders but was not sent.")));
        }
    }
    if auth.scope.date != &amz_date[..8] {
        return Err(VerifyError::ScopeDate {
            scope: auth.scope.date.to_string(),
            day: amz_date[..8].to_string(),
            amz_date: amz_date.to_string(),
        });
    }
    let canonical = canonical_request(req.method, req.path, req.query, &signed, &hex(&Sha256::digest(req.body)));
    let expected = signature(&secret, &auth.scope, amz_date, &canonical.request);
    if !constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        return Err(VerifyError::Mismatch);
    }
    Ok(auth.access_key_id.to_string())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    /// 2015-08-30T12:36:00Z, the test suite's time.
    const SUITE_TIME: i64 = 1_440_938_160;
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn creds(token: Option<&str>) -> AwsCredentials {
        AwsCredentials { access_key_id: AKID.into(), secret_access_key: SECRET.into(), session_token: token.map(str::to_string) }
    }

    fn header<'a>(r: &'a WireRequest, name: &str) -> Option<&'a str> {
        r.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn suite_scope() -> Scope<'static> {
        Scope { date: "20150830", region: "us-east-1", service: "service" }
    }

    /// One case of AWS's SigV4 test suite: the canonical request, its string to sign and the signature.
    #[allow(clippy::too_many_arguments)]
    fn suite_case(method: &str, path: &str, query: &str, extra: &[(&str, &str)], body: &[u8], canonical: &str, sts_hash: &str, sig: &str) {
        let mut headers = vec![("host".to_string(), "example.amazonaws.com".to_string()), ("x-amz-date".into(), "20150830T123600Z".into())];
        headers.extend(extra.iter().map(|(n, v)| ((*n).to_string(), (*v).to_string())));
        let c = canonical_request(method, path, query, &headers, &hex(&Sha256::digest(body)));
        assert_eq!(c.request, canonical);
        let sts = string_to_sign("20150830T123600Z", &suite_scope(), &c.request);
        assert_eq!(sts, format!("AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n{sts_hash}"));
        assert_eq!(signature(SECRET, &suite_scope(), "20150830T123600Z", &c.request), sig);
    }

    #[test]
    fn aws_suite_get_vanilla() {
        suite_case(
            "GET",
            "/",
            "",
            &[],
            b"",
            &format!("GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{EMPTY_SHA256}"),
            "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        );
    }

    #[test]
    fn aws_suite_get_utf8_encodes_each_byte() {
        // The suite's path is the raw `/ሴ`; the canonical URI encodes its UTF-8 bytes.
        suite_case(
            "GET",
            "/ሴ",
            "",
            &[],
            b"",
            &format!("GET\n/%E1%88%B4\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{EMPTY_SHA256}"),
            "2a0a97d02205e45ce2e994789806b19270cfbbb0921b278ccf58f5249ac42102",
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        );
    }

    #[test]
    fn aws_suite_queries_sort_and_encode() {
        suite_case(
            "GET",
            "/",
            "Param1=value2&Param1=Value1",
            &[],
            b"",
            &format!(
                "GET\n/\nParam1=Value1&Param1=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{EMPTY_SHA256}"
            ),
            "704b4cef673542d84cdff252633f065e8daeba5f168b77116f8b1bcaf3d38f89",
            "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1",
        );
        assert_eq!(canonical_query("Param2=value2&Param1=value1"), "Param1=value1&Param2=value2");
        assert_eq!(canonical_query("%E1%88%B4=bar"), "%E1%88%B4=bar");
        assert_eq!(canonical_query(""), "");
    }

    #[test]
    fn aws_suite_header_values_are_trimmed_and_collapsed() {
        suite_case(
            "GET",
            "/",
            "",
            &[("My-Header1", " value1"), ("my-header2", " \"a   b   c\"")],
            b"",
            &format!("GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\nx-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\n{EMPTY_SHA256}"),
            "a726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7",
            "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        );
    }

    #[test]
    fn aws_suite_paths_normalise() {
        assert_eq!(canonical_uri("/example/.."), "/");
        assert_eq!(canonical_uri("//"), "/");
        assert_eq!(canonical_uri("/./example"), "/example");
        assert_eq!(canonical_uri("//example//"), "/example/");
        assert_eq!(canonical_uri("/example space/"), "/example%20space/");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(
            canonical_uri("/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
            "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        );
    }

    /// `sign` end to end on the suite's requests: these headers are exactly what `sign` signs.
    #[test]
    fn sign_reproduces_the_suite_post_requests() {
        let mut r = WireRequest { method: Method::Post, url: "https://example.amazonaws.com/".into(), headers: vec![], body: vec![] };
        sign(&mut r, &creds(None), "us-east-1", "service", SUITE_TIME).unwrap();
        assert_eq!(header(&r, "x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(
            header(&r, "authorization"),
            Some("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b")
        );
        // post-x-www-form-urlencoded: content-type is signed, the body hashed.
        let mut r = WireRequest {
            method: Method::Post,
            url: "https://example.amazonaws.com/".into(),
            headers: vec![("Content-Type".into(), "application/x-www-form-urlencoded".into())],
            body: b"Param1=value1".to_vec(),
        };
        sign(&mut r, &creds(None), "us-east-1", "service", SUITE_TIME).unwrap();
        assert_eq!(
            header(&r, "authorization"),
            Some("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a")
        );
        // post-sts-header-before: the session token is signed.
        let token = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
        let mut r = WireRequest { method: Method::Post, url: "https://example.amazonaws.com/".into(), headers: vec![], body: vec![] };
        sign(&mut r, &creds(Some(token)), "us-east-1", "service", SUITE_TIME).unwrap();
        assert_eq!(header(&r, "x-amz-security-token"), Some(token));
        assert!(header(&r, "authorization").unwrap().ends_with(
            "SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"
        ));
        // get-vanilla through `sign`.
        let mut r = WireRequest::get("https://example.amazonaws.com".into());
        sign(&mut r, &creds(None), "us-east-1", "service", SUITE_TIME).unwrap();
        assert!(header(&r, "authorization")
            .unwrap()
            .ends_with("Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"));
    }

    /// 2025-01-01T12:00:00Z.
    const BOTO_TIME: i64 = 1_735_732_800;
    const BOTO_BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}],"inferenceConfig":{"maxTokens":64}}"#;

    /// Signatures botocore (1.44) computes for the same Bedrock requests with the suite's credentials in
    /// eu-central-1 at 2025-01-01T12:00:00Z: a model id with `:` and an inference-profile ARN with `:`
    /// and `/`, with and without a session token. They pin the double encoding of the path.
    #[test]
    fn sign_matches_botocore_for_bedrock_paths() {
        let base = "https://bedrock-runtime.eu-central-1.amazonaws.com/model";
        let cases = [
            (
                format!("{base}/eu.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"),
                None,
                "a226f01167c226099e02f3c5fe4d30095bc07b0c3e7daeec0e77506dca3b3d55",
            ),
            (
                format!("{base}/eu.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"),
                Some("IQoJb3JpZ2luX2VjEXAMPLEtoken=="),
                "a901e9ab39a0fa90f3c1a1729734a1b99f540d6505002475f1a85d56615d6f42",
            ),
            (
                format!("{base}/arn%3Aaws%3Abedrock%3Aeu-central-1%3A123456789012%3Ainference-profile%2Feu.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream"),
                None,
                "7539d8c325e92fcb7ce041d532fab08005107662b4f7034ad3b91a3179fa19df",
            ),
            (
                format!("{base}/arn%3Aaws%3Abedrock%3Aeu-central-1%3A123456789012%3Ainference-profile%2Feu.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream"),
                Some("IQoJb3JpZ2luX2VjEXAMPLEtoken=="),
                "5b159e87d196a894b69cea8f64da8b1a9d92a6f21ba11a003a7899809d9f0a4f",
            ),
        ];
        for (url, token, want) in cases {
            let mut r = WireRequest::post_json(url.clone(), BOTO_BODY.as_bytes().to_vec()).header("traceparent", "00-abc-def-01");
            sign(&mut r, &creds(token), "eu-central-1", "bedrock", BOTO_TIME).unwrap();
            let auth = header(&r, "authorization").unwrap();
            let signed = if token.is_some() { "content-type;host;x-amz-date;x-amz-security-token" } else { "content-type;host;x-amz-date" };
            assert_eq!(
                auth,
                format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/eu-central-1/bedrock/aws4_request, SignedHeaders={signed}, Signature={want}"),
                "{url}"
            );
        }
        assert_eq!(
            canonical_uri("/model/arn%3Aaws%3Abedrock%3Aeu-central-1%3A123456789012%3Ainference-profile%2Fx-v1%3A0/converse"),
            "/model/arn%253Aaws%253Abedrock%253Aeu-central-1%253A123456789012%253Ainference-profile%252Fx-v1%253A0/converse"
        );
    }

    #[test]
    fn signing_again_replaces_the_old_signature() {
        let mut r = WireRequest::post_json("http://127.0.0.1:9000/model/m/converse".into(), b"{}".to_vec());
        sign(&mut r, &creds(Some("t1")), "eu-central-1", "bedrock", BOTO_TIME).unwrap();
        sign(&mut r, &creds(None), "eu-central-1", "bedrock", BOTO_TIME + 60).unwrap();
        let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "x-amz-date", "authorization"]);
        assert_eq!(header(&r, "x-amz-date"), Some("20250101T120100Z"));
    }

    #[test]
    fn hosts_keep_explicit_ports_only() {
        assert_eq!(UrlParts::parse("https://Bedrock.example:443/x").unwrap().host, "bedrock.example");
        assert_eq!(UrlParts::parse("http://127.0.0.1:80/x?a=b").unwrap().host, "127.0.0.1");
        let p = UrlParts::parse("http://127.0.0.1:8080/x/y?a=b#frag").unwrap();
        assert_eq!((p.host.as_str(), p.path, p.query), ("127.0.0.1:8080", "/x/y", "a=b"));
        assert!(matches!(UrlParts::parse("bedrock.example/x"), Err(SignError::Url { .. })));
        assert!(matches!(UrlParts::parse("ftp://h/x"), Err(SignError::Url { .. })));
        assert!(matches!(UrlParts::parse("https:///x"), Err(SignError::Url { .. })));
    }

    #[test]
    fn dates() {
        assert_eq!(amz_date(SUITE_TIME).unwrap(), "20150830T123600Z");
        assert_eq!(amz_date(0).unwrap(), "19700101T000000Z");
        assert_eq!(amz_date(951_782_400).unwrap(), "20000229T000000Z");
        assert_eq!(amz_date(-1), Err(SignError::Time(-1)));
        for t in [0, SUITE_TIME, BOTO_TIME, 951_782_400, 4_102_444_799] {
            assert_eq!(parse_amz_date(&amz_date(t).unwrap()), Some(t));
        }
        for bad in ["20150830T123600", "2015-08-30T12:36:00Z", "20151330T123600Z", "2015083OT123600Z", ""] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn credentials_never_print_their_secrets() {
        let shown = format!("{:?}", creds(Some("tok-secret")));
        assert!(shown.contains("AKIDEXAMPLE") && !shown.contains(SECRET) && !shown.contains("tok-secret"), "{shown}");
    }

    fn received(r: &WireRequest) -> (String, String, Vec<(String, String)>) {
        let p = UrlParts::parse(&r.url).unwrap();
        let mut headers = r.headers.clone();
        headers.push(("Host".into(), p.host.clone()));
        (p.path.to_string(), p.query.to_string(), headers)
    }

    #[test]
    fn verify_accepts_what_sign_produces_and_refuses_tampering() {
        let url = "http://127.0.0.1:4000/model/eu.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse";
        let mut r = WireRequest::post_json(url.into(), BOTO_BODY.as_bytes().to_vec());
        sign(&mut r, &creds(Some("tok")), "eu-central-1", "bedrock", BOTO_TIME).unwrap();
        let (path, query, headers) = received(&r);
        let secret = |k: &str| (k == AKID).then(|| SECRET.to_string());
        let rcv = Received { method: "POST", path: &path, query: &query, headers: &headers, body: &r.body };
        assert_eq!(verify(&rcv, "eu-central-1", "bedrock", BOTO_TIME + 60, secret), Ok(AKID.to_string()));
        assert_eq!(verify(&rcv, "us-east-1", "bedrock", BOTO_TIME, secret), Err(VerifyError::WrongRegion));
        assert!(matches!(verify(&rcv, "eu-central-1", "s3", BOTO_TIME, secret), Err(VerifyError::WrongService(_))));
        assert!(matches!(verify(&rcv, "eu-central-1", "bedrock", BOTO_TIME + 16 * 60, secret), Err(VerifyError::Expired { .. })));
        assert!(matches!(verify(&rcv, "eu-central-1", "bedrock", BOTO_TIME, |_| None), Err(VerifyError::UnknownKey(_))));
        let other = |_: &str| Some("another secret".to_string());
        assert_eq!(verify(&rcv, "eu-central-1", "bedrock", BOTO_TIME, other), Err(VerifyError::Mismatch));
        // The body, the path and a signed header are all covered.
        let tampered = Received { body: b"{}", ..rcv };
        assert_eq!(verify(&tampered, "eu-central-1", "bedrock", BOTO_TIME, secret), Err(VerifyError::Mismatch));
        let single = path.replace("%3A", ":");
        let tampered = Received { path: &single, ..rcv };
        assert_eq!(verify(&tampered, "eu-central-1", "bedrock", BOTO_TIME, secret), Err(VerifyError::Mismatch));
        let mut h2 = headers.clone();
        for (n, v) in &mut h2 {
            if n == "x-amz-security-token" {
                *v = "other".into();
            }
        }
        let tampered = Received { headers: &h2, ..rcv };
        assert_eq!(verify(&tampered, "eu-central-1", "bedrock", BOTO_TIME, secret), Err(VerifyError::Mismatch));
        let h3: Vec<(String, String)> = headers.iter().filter(|(n, _)| n != "content-type").cloned().collect();
        let missing = Received { headers: &h3, ..rcv };
        assert!(matches!(verify(&missing, "eu-central-1", "bedrock", BOTO_TIME, secret), Err(VerifyError::Unsigned(_))));
        let none: Vec<(String, String)> = vec![];
        assert_eq!(verify(&Received { headers: &none, ..rcv }, "eu-central-1", "bedrock", BOTO_TIME, secret), Err(VerifyError::Missing));
    }

    #[test]
    fn authorization_headers_parse_strictly() {
        let a = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20250101/eu-central-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=abcd",
        )
        .unwrap();
        assert_eq!(a.access_key_id, "AKID");
        assert_eq!(a.scope, Scope { date: "20250101", region: "eu-central-1", service: "bedrock" });
        assert_eq!(a.signed_headers, ["content-type", "host", "x-amz-date"]);
        assert_eq!(a.signature, "abcd");
        for bad in [
            "Bearer abc",
            "AWS4-HMAC-SHA256 Credential=AKID/20250101/eu-central-1/bedrock/aws4_request, SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=AKID/20250101/eu-central-1/bedrock, SignedHeaders=host, Signature=ab",
            "AWS4-HMAC-SHA256 Credential=/20250101/r/s/aws4_request, SignedHeaders=host, Signature=ab",
            "AWS4-HMAC-SHA256 Credential=A/d/r/s/aws4_request/x, SignedHeaders=host, Signature=ab",
            "AWS4-HMAC-SHA256 Credential=A/d/r/s/aws4_request, SignedHeaders=host, Signature=ab, Extra=1",
        ] {
            assert!(matches!(parse_authorization(bad), Err(VerifyError::Malformed(_))), "{bad}");
        }
    }
}
