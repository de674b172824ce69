//! Cloud credentials for the providers that do not take a plain API key: AWS (Bedrock, signed with SigV4)
//! and Google (Vertex, an OAuth access token from a service account or application-default credentials).
//!
//! Why here: the configuration is the one place that reads the environment and the files credentials come
//! from, so it resolves them once, at load, into values the engine holds (the wire crate only signs with
//! them; the engine's token source exchanges a Google credential for access tokens). Each source is tried in
//! the order the providers' own SDKs use, and a provider left without any is a configuration error that
//! names what to set, never a request that fails later.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use switchyard_wire::google_auth::GoogleCredential;
use switchyard_wire::AwsCredentials;

use super::{Env, Issues};

/// `providers.NAME.aws`: static AWS credentials, each a literal or `env.NAME`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAws {
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default)]
    secret_access_key: Option<String>,
    #[serde(default)]
    session_token: Option<String>,
    /// A profile of the shared credentials file (`~/.aws/credentials`).
    #[serde(default)]
    profile: Option<String>,
}

/// The AWS credentials for a Bedrock provider without a Bedrock API key: the `aws:` section, else the
/// standard chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, then the shared
/// credentials file's `AWS_PROFILE` or `default` profile). `None` with an issue when nothing gives any.
pub(super) fn aws(path: &str, raw: Option<RawAws>, env: &dyn Env, issues: &mut Issues) -> Option<Arc<AwsCredentials>> {
    let apath = format!("{path}.aws");
    if let Some(raw) = raw {
        if raw.profile.is_some() && (raw.access_key_id.is_some() || raw.secret_access_key.is_some()) {
            issues.push(&apath, "write either a profile or access_key_id and secret_access_key, not both");
            return None;
        }
        if let Some(profile) = raw.profile {
            return from_shared_file(&apath, &profile, env, issues);
        }
        let field = |name: &str, v: Option<String>, issues: &mut Issues| -> Option<String> {
            let at = format!("{apath}.{name}");
            let v = from_env(&at, v?, env, issues)?;
            if v.is_empty() {
                issues.push(at, "must not be empty");
                return None;
            }
            Some(v)
        };
        let before = issues.len();
        let id = field("access_key_id", raw.access_key_id, issues);
        let secret = field("secret_access_key", raw.secret_access_key, issues);
        let token = field("session_token", raw.session_token, issues);
        // A half that is absent (not one whose variable is unset, already reported) is what to say.
        let reported = issues.len() > before;
        return match (id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => {
                Some(Arc::new(AwsCredentials { access_key_id, secret_access_key, session_token: token }))
            }
            _ if reported => None,
            (None, _) => {
                issues
                    .push(format!("{apath}.access_key_id"), "required with secret_access_key (e.g. access_key_id: env.AWS_ACCESS_KEY_ID)");
                None
            }
            (_, None) => {
                issues.push(
                    format!("{apath}.secret_access_key"),
                    "required with access_key_id (e.g. secret_access_key: env.AWS_SECRET_ACCESS_KEY)",
                );
                None
            }
        };
    }
    if let (Some(access_key_id), Some(secret_access_key)) = (env.var("AWS_ACCESS_KEY_ID"), env.var("AWS_SECRET_ACCESS_KEY")) {
        return Some(Arc::new(AwsCredentials { access_key_id, secret_access_key, session_token: env.var("AWS_SESSION_TOKEN") }));
    }
    let profile = env.var("AWS_PROFILE").unwrap_or_else(|| "default".to_string());
    let file = shared_file(env)?;
    let text = std::fs::read_to_string(&file).ok()?;
    match profile_credentials(&text, &profile) {
        Ok(c) => Some(Arc::new(c)),
        Err(_) => None,
    }
}

/// The Google credential of a Vertex provider: `credentials_file`, else `GOOGLE_APPLICATION_CREDENTIALS`,
/// else gcloud's application-default credentials file (the order Google's client libraries use).
pub(super) fn google(path: &str, file: Option<String>, env: &dyn Env, issues: &mut Issues) -> Option<Arc<GoogleCredential>> {
    let (at, file) = match file {
        Some(f) => {
            let at = format!("{path}.credentials_file");
            let f = from_env(&at, f, env, issues)?;
            (at, PathBuf::from(f))
        }
        None => match env.var("GOOGLE_APPLICATION_CREDENTIALS") {
            Some(f) => (format!("{path} (GOOGLE_APPLICATION_CREDENTIALS)"), PathBuf::from(f)),
            None => {
                let adc = env.var("HOME").map(|h| PathBuf::from(h).join(".config/gcloud/application_default_credentials.json"));
                match adc.filter(|p| p.is_file()) {
                    Some(p) => (format!("{path} (application-default credentials)"), p),
                    None => {
                        issues.push(
                            format!("{path}.credentials_file"),
                            "type vertex needs Google credentials: credentials_file: /path/to/service-account.json, GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth application-default login`",
                        );
                        return None;
                    }
                }
            }
        },
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            issues.push(at, format!("cannot read {}: {e}", file.display()));
            return None;
        }
    };
    match GoogleCredential::from_json(&text) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            issues.push(at, format!("{}: {e}", file.display()));
            None
        }
    }
}

/// `env.NAME` read from the environment (an unset variable is an issue at `at`), anything else as written.
fn from_env(at: &str, v: String, env: &dyn Env, issues: &mut Issues) -> Option<String> {
    let Some(var) = v.strip_prefix("env.") else { return Some(v) };
    let value = env.var(var);
    if value.is_none() {
        issues.push(at, format!("environment variable {var} is not set"));
    }
    value
}

/// Where the shared credentials file is: `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
fn shared_file(env: &dyn Env) -> Option<PathBuf> {
    if let Some(f) = env.var("AWS_SHARED_CREDENTIALS_FILE") {
        return Some(PathBuf::from(f));
    }
    env.var("HOME").map(|h| PathBuf::from(h).join(".aws").join("credentials"))
}

fn from_shared_file(apath: &str, profile: &str, env: &dyn Env, issues: &mut Issues) -> Option<Arc<AwsCredentials>> {
    let Some(file) = shared_file(env) else {
        issues.push(format!("{apath}.profile"), "no shared credentials file: set AWS_SHARED_CREDENTIALS_FILE or HOME");
        return None;
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            issues.push(format!("{apath}.profile"), format!("cannot read {}: {e}", file.display()));
            return None;
        }
    };
    match profile_credentials(&text, profile) {
        Ok(c) => Some(Arc::new(c)),
        Err(why) => {
            issues.push(format!("{apath}.profile"), format!("{}: {why}", file.display()));
            None
        }
    }
}

/// Reads one profile of an INI-style shared credentials file.
fn profile_credentials(text: &str, profile: &str) -> Result<AwsCredentials, String> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            // The config file's `[profile NAME]` form is accepted too.
            let name = name.trim();
            let name = name.strip_prefix("profile ").unwrap_or(name).trim().to_string();
            sections.entry(name.clone()).or_default();
            current = Some(name);
        } else if let (Some(section), Some((k, v))) = (&current, line.split_once('=')) {
            sections.entry(section.clone()).or_default().insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let s = sections.get(profile).ok_or_else(|| format!("has no profile [{profile}]"))?;
    let get = |k: &str| s.get(k).filter(|v| !v.is_empty()).cloned();
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(access_key_id), Some(secret_access_key)) => {
            Ok(AwsCredentials { access_key_id, secret_access_key, session_token: get("aws_session_token") })
        }
        _ => Err(format!("profile [{profile}] lacks aws_access_key_id or aws_secret_access_key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_credentials_profile_is_read() {
        let text = "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n\n[profile pilot]\naws_access_key_id=AKIDPILOT\naws_secret_access_key=s2\naws_session_token = tok\n";
        let d = profile_credentials(text, "default").unwrap();
        assert_eq!((d.access_key_id.as_str(), d.session_token), ("AKIDDEFAULT", None));
        let p = profile_credentials(text, "pilot").unwrap();
        assert_eq!((p.access_key_id.as_str(), p.secret_access_key.as_str(), p.session_token.as_deref()), ("AKIDPILOT", "s2", Some("tok")));
        assert!(profile_credentials(text, "nope").unwrap_err().contains("no profile [nope]"));
        assert!(profile_credentials("[x]\naws_access_key_id=a\n", "x").unwrap_err().contains("lacks"));
    }
}
