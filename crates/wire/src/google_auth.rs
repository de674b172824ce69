//! Google OAuth for Vertex AI, as pure functions: read a credentials JSON (a service account key or the
//! `authorized_user` file `gcloud auth application-default login` writes), build the token request, and
//! read the token response. The engine sends the request and caches the token.
//!
//! Why by hand: a service account's exchange is one RS256-signed JWT (RFC 7523) posted to its `token_uri`,
//! and ring (already in the tree for TLS) signs it; Google's auth crates would bring their own HTTP stack
//! and runtime for that one request.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use crate::spec::{Method, WireRequest};

/// The scope Vertex AI needs.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// How long an assertion is valid; Google accepts at most an hour.
const ASSERTION_LIFETIME_SECS: i64 = 3600;

/// A credential that can be exchanged for access tokens.
#[derive(Clone)]
pub enum GoogleCredential {
    ServiceAccount { client_email: String, private_key_id: Option<String>, key_pkcs8: Vec<u8>, token_uri: String },
    AuthorizedUser { client_id: String, client_secret: String, refresh_token: String, token_uri: String },
}

impl std::fmt::Debug for GoogleCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GoogleCredential::ServiceAccount { client_email, token_uri, .. } => {
                f.debug_struct("ServiceAccount").field("client_email", client_email).field("token_uri", token_uri).finish_non_exhaustive()
            }
            GoogleCredential::AuthorizedUser { client_id, token_uri, .. } => {
                f.debug_struct("AuthorizedUser").field("client_id", client_id).field("token_uri", token_uri).finish_non_exhaustive()
            }
        }
    }
}

#[derive(Deserialize)]
struct RawCredential {
    #[serde(rename = "type")]
    kind: String,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    token_uri: Option<String>,
}

/// A credential that cannot be read or used, or a token endpoint that refused it. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(pub String);

fn bad(message: impl Into<String>) -> CredentialError {
    CredentialError(message.into())
}

impl GoogleCredential {
    /// Reads a credentials JSON file's content. Errors say which field is missing, never a secret.
    pub fn from_json(text: &str) -> Result<Self, CredentialError> {
        let raw: RawCredential = serde_json::from_str(text).map_err(|e| bad(format!("not a Google credentials JSON: {e}")))?;
        let token_uri = raw.token_uri.unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
        match raw.kind.as_str() {
            "service_account" => {
                let client_email = raw.client_email.ok_or_else(|| bad("service account JSON lacks client_email"))?;
                let pem = raw.private_key.ok_or_else(|| bad("service account JSON lacks private_key"))?;
                let key_pkcs8 = pem_pkcs8(&pem)?;
                // Fail at load, not at the first request, if ring cannot use the key.
                ring::signature::RsaKeyPair::from_pkcs8(&key_pkcs8)
                    .map_err(|e| bad(format!("service account private_key is not a usable RSA key: {e}")))?;
                Ok(GoogleCredential::ServiceAccount { client_email, private_key_id: raw.private_key_id, key_pkcs8, token_uri })
            }
            "authorized_user" => Ok(GoogleCredential::AuthorizedUser {
                client_id: raw.client_id.ok_or_else(|| bad("authorized_user JSON lacks client_id"))?,
                client_secret: raw.client_secret.ok_or_else(|| bad("authorized_user JSON lacks client_secret"))?,
                refresh_token: raw.refresh_token.ok_or_else(|| bad("authorized_user JSON lacks refresh_token"))?,
                token_uri,
            }),
            other => Err(bad(format!(
                "credentials of type \"{other}\" are not supported; use a service account key (type service_account) or application-default credentials (type authorized_user)"
            ))),
        }
    }

    /// Who the credential is, for logs and `check` (no secret).
    pub fn principal(&self) -> &str {
        match self {
            GoogleCredential::ServiceAccount { client_email, .. } => client_email,
            GoogleCredential::AuthorizedUser { client_id, .. } => client_id,
        }
    }

    /// The token request: a signed JWT bearer grant, or a refresh-token grant. `now_unix` is the time of
    /// signing.
    pub fn token_request(&self, now_unix: i64) -> Result<WireRequest, CredentialError> {
        let (uri, form) = match self {
            GoogleCredential::ServiceAccount { token_uri, .. } => {
                let assertion = self.assertion(now_unix)?;
                (token_uri, format!("grant_type={}&assertion={assertion}", form_encode("urn:ietf:params:oauth:grant-type:jwt-bearer")))
            }
            GoogleCredential::AuthorizedUser { client_id, client_secret, refresh_token, token_uri } => (
                token_uri,
                format!(
                    "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={}",
                    form_encode(client_id),
                    form_encode(client_secret),
                    form_encode(refresh_token)
                ),
            ),
        };
        Ok(WireRequest {
            method: Method::Post,
            url: uri.clone(),
            headers: vec![("content-type".into(), "application/x-www-form-urlencoded".into())],
            body: form.into_bytes(),
        })
    }

    /// The RS256 JWT a service account presents (RFC 7523 §2.1).
    fn assertion(&self, now_unix: i64) -> Result<String, CredentialError> {
        let GoogleCredential::ServiceAccount { client_email, private_key_id, key_pkcs8, token_uri } = self else {
            return Err(bad("only a service account signs assertions"));
        };
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = private_key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": client_email,
            "scope": CLOUD_PLATFORM_SCOPE,
            "aud": token_uri,
            "iat": now_unix,
            "exp": now_unix + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let key = ring::signature::RsaKeyPair::from_pkcs8(key_pkcs8).map_err(|e| bad(format!("service account key: {e}")))?;
        let mut sig = vec![0u8; key.public().modulus_len()];
        key.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signing_input.as_bytes(), &mut sig)
            .map_err(|_| bad("signing the service account assertion failed"))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// A token endpoint's answer: the access token and its lifetime in seconds.
pub fn parse_token_response(body: &[u8]) -> Result<(String, u64), CredentialError> {
    #[derive(Deserialize)]
    struct Token {
        access_token: Option<String>,
        expires_in: Option<u64>,
        error: Option<String>,
        error_description: Option<String>,
    }
    let t: Token = serde_json::from_slice(body).map_err(|e| bad(format!("token endpoint answered something that is not a token: {e}")))?;
    match (t.access_token, t.error) {
        (Some(token), _) if !token.is_empty() => Ok((token, t.expires_in.unwrap_or(3600))),
        (_, Some(e)) => {
            Err(bad(format!("token endpoint refused: {e}{}", t.error_description.map(|d| format!(": {d}")).unwrap_or_default())))
        }
        _ => Err(bad("token endpoint answered without an access_token")),
    }
}

/// The DER of a PEM `PRIVATE KEY` (PKCS#8), the form Google's key files use.
fn pem_pkcs8(pem: &str) -> Result<Vec<u8>, CredentialError> {
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PRIVATE KEY-----")
        .and_then(|r| r.trim_end().strip_suffix("-----END PRIVATE KEY-----"))
        .ok_or_else(|| bad("service account private_key is not a PEM \"PRIVATE KEY\" (PKCS#8)"))?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(b64).map_err(|_| bad("service account private_key is not valid base64 PEM"))
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authorized_user_refreshes_with_its_token() {
        let c = GoogleCredential::from_json(
            r#"{"type":"authorized_user","client_id":"cid.apps","client_secret":"s&x","refresh_token":"1//r/t","token_uri":"http://127.0.0.1:9/token"}"#,
        )
        .unwrap();
        let r = c.token_request(0).unwrap();
        assert_eq!(r.url, "http://127.0.0.1:9/token");
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "grant_type=refresh_token&client_id=cid.apps&client_secret=s%26x&refresh_token=1%2F%2Fr%2Ft"
        );
        assert!(!format!("{c:?}").contains("1//r/t"), "Debug shows no secret");
    }

    #[test]
    fn token_responses_and_refusals() {
        assert_eq!(
            parse_token_response(br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#).unwrap(),
            ("ya29.x".into(), 3599)
        );
        let e = parse_token_response(br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#).unwrap_err();
        assert!(e.to_string().contains("invalid_grant: Invalid JWT Signature."), "{e}");
    }

    #[test]
    fn a_service_account_signs_an_rs256_assertion_for_its_token_uri() {
        let c = GoogleCredential::from_json(include_str!("../tests/fixtures/google/service_account.json")).unwrap();
        assert_eq!(c.principal(), "gateway@switchyard-test.iam.gserviceaccount.com");
        let r = c.token_request(1_700_000_000).unwrap();
        assert_eq!(r.url, "http://127.0.0.1:9/token");
        let form = String::from_utf8(r.body).unwrap();
        let jwt = form.strip_prefix("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=").unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "0123456789abcdef"}));
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "http://127.0.0.1:9/token");
        assert_eq!(claims["scope"], CLOUD_PLATFORM_SCOPE);
        assert_eq!((claims["iat"].as_i64(), claims["exp"].as_i64()), (Some(1_700_000_000), Some(1_700_003_600)));
        // The signature verifies under the key's public half.
        let GoogleCredential::ServiceAccount { key_pkcs8, .. } = &c else { unreachable!() };
        let pair = ring::signature::RsaKeyPair::from_pkcs8(key_pkcs8).unwrap();
        let public = ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, pair.public().as_ref());
        let signed = format!("{}.{}", parts[0], parts[1]);
        public.verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        assert!(public.verify(b"tampered", &URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).is_err());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let e = GoogleCredential::from_json(r#"{"type":"service_account","client_email":"a@b","private_key":"nope"}"#).unwrap_err();
        assert!(e.to_string().contains("PEM"), "{e}");
        let e = GoogleCredential::from_json(r#"{"type":"external_account"}"#).unwrap_err();
        assert!(e.to_string().contains("external_account"), "{e}");
        assert!(GoogleCredential::from_json("{").is_err());
    }
}
