//! `switchyard export`: the live configuration as one file, so that what was built through the management
//! API can be reviewed, kept in version control, and served from a file again.
//!
//! The file's own text is the starting point (its order and every setting kept; YAML comments are not), and
//! the entities the store holds are added to its `governance:` lists. The result holds no secret:
//! - a virtual key's value is written as `value: sha256:<hex>`, the hash the gateway finds keys by, which a
//!   file loads as it is: callers keep presenting the same value, and no value can be read back from it;
//! - a key whose id is its value (made by `PUT` without a value, Bifrost's seed scripts) would print its
//!   value as its id: it is written under a new id, `vk-<first 16 hex digits of the hash>`, with the same
//!   hash as its value. Callers keep presenting the old id; the key's meters start afresh under the new id;
//! - a provider key or image proxy written literally in the file becomes `env.NAME`, and the names to set
//!   are returned (`needs_env`); values already read from `env.NAME` stay so.
//!
//! The result is checked as `serve` would load it (with every variable standing in), so an export that
//! would not start is an error here rather than at the next deploy.
//!
//! Providers written through the management API (`/api/providers`) are added to `providers:` by name (one
//! the file defines too is the file's), with their literal keys as `env.NAME` like the file's own.

use serde_yaml_ng::{Mapping, Value as Yaml};

use super::store::StoredGovernance;
use super::value_sha256;
use crate::config::governance::SHA256_VALUE;
use crate::config::Env;
use crate::providers::spec::ProviderSpec;

/// The exported file and what it needs to run.
#[derive(Debug, Clone)]
pub struct Exported {
    pub yaml: String,
    /// Environment variables the file reads that the source file held literally: set them before serving.
    pub needs_env: Vec<String>,
    /// What was changed on the way, one line each, for the operator.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ExportError {
    #[error("the configuration file cannot be read as YAML: {0}")]
    File(String),
    #[error("the exported configuration would not load: {0}")]
    Invalid(String),
}

/// Stands in for every environment variable while the result is checked: a distinct value per name, one
/// that is also a well-formed URL (an image proxy may be read from one).
struct Standing;

impl Env for Standing {
    fn var(&self, name: &str) -> Option<String> {
        Some(format!("http://standing-in.invalid/{name}"))
    }
}

/// The configuration file `file_text` with the entities of `stored` merged in (see the module doc).
pub fn export(file_text: &str, stored: &StoredGovernance, providers: &[ProviderSpec]) -> Result<Exported, ExportError> {
    let mut root = match serde_yaml_ng::from_str::<Yaml>(file_text).map_err(|e| ExportError::File(e.to_string()))? {
        Yaml::Mapping(m) => m,
        Yaml::Null => Mapping::new(),
        _ => return Err(ExportError::File("the file must be a mapping".into())),
    };
    let mut out = Exported { yaml: String::new(), needs_env: Vec::new(), notes: Vec::new() };
    if !providers.is_empty() {
        let mut section = take_mapping(&mut root, "providers");
        for p in providers {
            let name = Yaml::String(p.provider.clone());
            if section.contains_key(&name) {
                out.notes.push(format!("provider {}: the file's is kept (the store's copy is superseded)", p.provider));
                continue;
            }
            match p.to_section() {
                Ok(v) => {
                    section.insert(name, v);
                }
                Err(issues) => out.notes.push(format!(
                    "provider {}: left out, it does not load: {}",
                    p.provider,
                    issues.iter().map(|i| format!("{}: {}", i.path, i.message)).collect::<Vec<_>>().join("; ")
                )),
            }
        }
        root.insert("providers".into(), Yaml::Mapping(section));
    }
    provider_secrets(&mut root, &mut out);

    let mut gov = take_mapping(&mut root, "governance");
    let ids =
        |list: &[Yaml]| -> Vec<String> { list.iter().filter_map(|v| v.get("id").and_then(Yaml::as_str).map(str::to_string)).collect() };
    let mut customers = take_sequence(&mut gov, "customers");
    let file_customers = ids(&customers);
    for c in &stored.customers {
        if file_customers.contains(&c.id) {
            out.notes.push(format!("customer \"{}\": the file's is kept (the store's copy is superseded)", c.id));
        } else if let Ok(v) = serde_yaml_ng::to_value(c) {
            customers.push(v);
        }
    }
    let mut teams = take_sequence(&mut gov, "teams");
    let file_teams = ids(&teams);
    for t in &stored.teams {
        if file_teams.contains(&t.id) {
            out.notes.push(format!("team \"{}\": the file's is kept (the store's copy is superseded)", t.id));
        } else if let Ok(v) = serde_yaml_ng::to_value(t) {
            teams.push(v);
        }
    }
    let mut keys = take_sequence(&mut gov, "virtual_keys");
    let file_keys = ids(&keys);
    for (i, k) in keys.iter_mut().enumerate() {
        if let Yaml::Mapping(m) = k {
            file_key(i, m, &mut out);
        }
    }
    for k in &stored.keys {
        if file_keys.contains(&k.spec.id) {
            out.notes.push(format!("virtual key named \"{}\": the file's is kept (the store's copy is superseded)", k.spec.name));
            continue;
        }
        let Ok(Yaml::Mapping(mut m)) = serde_yaml_ng::to_value(&k.spec) else { continue };
        m.insert("value".into(), Yaml::String(format!("{SHA256_VALUE}{}", k.value_sha256)));
        if k.value_sha256 == value_sha256(&k.spec.id) {
            rename(&mut m, &k.value_sha256, &mut out);
        }
        keys.push(Yaml::Mapping(m));
    }
    // Put back where they were (a mapping keeps an existing key's place); empty lists are left out.
    for (name, list) in [("customers", customers), ("teams", teams), ("virtual_keys", keys)] {
        if list.is_empty() {
            gov.remove(name);
        } else {
            gov.insert(name.into(), Yaml::Sequence(list));
        }
    }
    // Providers written through the management API go here, by name, once the store keeps them.
    if gov.is_empty() {
        root.remove("governance");
    } else {
        root.insert("governance".into(), Yaml::Mapping(gov));
    }

    let mut body = serde_yaml_ng::to_string(&Yaml::Mapping(root)).map_err(|e| ExportError::Invalid(e.to_string()))?;
    if !body.ends_with('\n') {
        body.push('\n');
    }
    crate::config::parse_str(&body, &Standing).map_err(|e| ExportError::Invalid(e.to_string()))?;
    let mut header = String::from(
        "# Written by `switchyard export`: the configuration file with what the management API wrote.\n\
         # Virtual keys are kept by the SHA-256 of their value (value: sha256:...); no secret is in this file.\n",
    );
    if !out.needs_env.is_empty() {
        header.push_str(&format!("# Set before serving: {}\n", out.needs_env.join(", ")));
    }
    out.yaml = format!("{header}{body}");
    Ok(out)
}

/// `m[name]` taken out as a mapping (empty when missing or not one), its place kept for putting it back.
fn take_mapping(m: &mut Mapping, name: &str) -> Mapping {
    match m.get_mut(name).map(|slot| std::mem::replace(slot, Yaml::Null)) {
        Some(Yaml::Mapping(inner)) => inner,
        _ => Mapping::new(),
    }
}

/// `m[name]` taken out as a list, the same way.
fn take_sequence(m: &mut Mapping, name: &str) -> Vec<Yaml> {
    match m.get_mut(name).map(|slot| std::mem::replace(slot, Yaml::Null)) {
        Some(Yaml::Sequence(list)) => list,
        _ => Vec::new(),
    }
}

/// A file key: a literal value becomes its hash; a key whose id is its value is renamed.
fn file_key(i: usize, m: &mut Mapping, out: &mut Exported) {
    let id = m.get("id").and_then(Yaml::as_str).unwrap_or_default().to_string();
    match m.get("value").and_then(Yaml::as_str).map(str::to_string) {
        Some(v) if v.starts_with("env.") || v.starts_with(SHA256_VALUE) => {}
        Some(v) => {
            m.insert("value".into(), Yaml::String(format!("{SHA256_VALUE}{}", value_sha256(&v))));
            out.notes.push(format!("governance.virtual_keys[{i}]: its literal value is written as its SHA-256"));
        }
        None if !id.is_empty() => {
            let hash = value_sha256(&id);
            m.insert("value".into(), Yaml::String(format!("{SHA256_VALUE}{hash}")));
            rename(m, &hash, out);
        }
        None => {}
    }
}

/// A key whose id is its value gets a new id that says nothing of the value (and so does its name, when
/// it was the id).
fn rename(m: &mut Mapping, hash: &str, out: &mut Exported) {
    let old = m.get("id").and_then(Yaml::as_str).unwrap_or_default().to_string();
    let new = format!("vk-{}", &hash[..16]);
    let name = m.get("name").and_then(Yaml::as_str).unwrap_or_default().to_string();
    let shown = if name.is_empty() || name == old {
        m.insert("name".into(), Yaml::String(new.clone()));
        new.clone()
    } else {
        name
    };
    m.insert("id".into(), Yaml::String(new.clone()));
    out.notes.push(format!(
        "virtual key named \"{shown}\": its id was its value, so it is exported as id {new}; callers present the same value as before, its meters start afresh"
    ));
}

/// Literal provider keys and image proxies become `env.NAME`.
fn provider_secrets(root: &mut Mapping, out: &mut Exported) {
    if let Some(Yaml::Mapping(providers)) = root.get_mut("providers") {
        for (name, p) in providers.iter_mut() {
            let name = name.as_str().unwrap_or_default().to_string();
            let Some(Yaml::Sequence(keys)) = p.get_mut("keys") else { continue };
            for (i, k) in keys.iter_mut().enumerate() {
                let Yaml::Mapping(k) = k else { continue };
                let literal = k.get("value").and_then(Yaml::as_str).is_some_and(|v| !v.starts_with("env."));
                if literal {
                    let var = env_name(&format!("SWITCHYARD_{name}_KEY_{i}"));
                    k.insert("value".into(), Yaml::String(format!("env.{var}")));
                    out.notes.push(format!("providers.{name}.keys[{i}]: written literally in the file; exported as env.{var}"));
                    out.needs_env.push(var);
                }
            }
        }
    }
    if let Some(Yaml::Mapping(images)) = root.get_mut("images") {
        let literal = images.get("proxy").and_then(Yaml::as_str).is_some_and(|v| !v.starts_with("env."));
        if literal {
            let var = "SWITCHYARD_IMAGES_PROXY".to_string();
            images.insert("proxy".into(), Yaml::String(format!("env.{var}")));
            out.notes.push(format!("images.proxy: written literally in the file (it may hold a password); exported as env.{var}"));
            out.needs_env.push(var);
        }
    }
}

/// An environment variable's name from free text: upper case, anything but letters and digits as `_`.
fn env_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::model::{Team, VirtualKeySpec};
    use crate::governance::store::StoredKey;

    fn key(id: &str, name: &str, value_sha256: String) -> StoredKey {
        let spec: VirtualKeySpec = serde_json::from_value(serde_json::json!({"id": id, "name": name})).unwrap();
        StoredKey { spec, value_sha256 }
    }

    const FILE: &str = "providers:\n  openai:\n    keys: [{value: sk-live-secret}, {value: env.OPENAI_KEY}]\n  ollama:\n    base_url: http://127.0.0.1:11434\ngovernance:\n  virtual_keys:\n    - {id: file-key, name: f, value: sk-file-secret}\n    - {id: vk-free, name: free}\n";

    #[test]
    fn an_export_holds_no_secret_and_loads_as_it_is() {
        let stored = StoredGovernance {
            customers: vec![],
            teams: vec![Team {
                id: "vision".into(),
                name: "Vision".into(),
                customer_id: None,
                budget: None,
                rate_limit: None,
                residency: None,
            }],
            keys: vec![key("vk-api", "api", value_sha256("sk-sy-made")), key("vk-seeded", "vk-seeded", value_sha256("vk-seeded"))],
        };
        let e = export(FILE, &stored, &[]).unwrap();
        for secret in ["sk-live-secret", "sk-file-secret", "sk-sy-made", "vk-free", "vk-seeded"] {
            assert!(!e.yaml.contains(secret), "{secret} in\n{}", e.yaml);
        }
        assert_eq!(e.needs_env, vec!["SWITCHYARD_OPENAI_KEY_0"]);
        assert!(e.yaml.contains("env.OPENAI_KEY"), "{}", e.yaml);
        let vars: std::collections::BTreeMap<String, String> =
            [("SWITCHYARD_OPENAI_KEY_0", "k0"), ("OPENAI_KEY", "k1")].into_iter().map(|(a, b)| (a.into(), b.into())).collect();
        let cfg = crate::config::parse_str(&e.yaml, &vars).unwrap();
        let g = &cfg.governance;
        assert_eq!(g.teams.len(), 1);
        // Each key is found by the value its callers presented before the export.
        let found = |value: &str| {
            g.keys.iter().find(|(_, v)| super::super::key_hash(secrecy::ExposeSecret::expose_secret(v)) == super::super::key_hash(value))
        };
        assert_eq!(found("sk-file-secret").unwrap().0.id, "file-key");
        assert_eq!(found("sk-sy-made").unwrap().0.id, "vk-api");
        let renamed = found("vk-seeded").unwrap();
        assert!(renamed.0.id.starts_with("vk-") && renamed.0.id == renamed.0.name, "{:?}", renamed.0);
        assert_eq!(found("vk-free").unwrap().0.name, "free");
    }

    #[test]
    fn a_malformed_hash_is_refused_at_load() {
        let text = "governance:\n  virtual_keys:\n    - {id: k, name: k, value: \"sha256:abc\"}\n";
        let err = crate::config::parse_str(text, &Standing).unwrap_err().to_string();
        assert!(err.contains("governance.virtual_keys[0].value") && err.contains("64 hex digits"), "{err}");
    }

    #[test]
    fn an_export_that_would_not_load_is_an_error() {
        // A stored key naming a provider the file no longer has.
        let mut k = key("vk-a", "a", value_sha256("x"));
        k.spec.provider_configs = vec![serde_json::from_value(serde_json::json!({"provider": "gone"})).unwrap()];
        let stored = StoredGovernance { keys: vec![k], ..StoredGovernance::default() };
        let err = export(FILE, &stored, &[]).unwrap_err().to_string();
        assert!(err.contains("gone"), "{err}");
    }
}
