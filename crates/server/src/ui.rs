//! The web UI, served by the binary at `/`: one static HTML shell and a few small hand-written ES modules
//! and a style sheet under `/ui/`, compiled into the binary (`include_str!`), so `cargo build` alone
//! builds it and nothing is fetched at run time. The pages are drawn in the browser from the management
//! API's JSON (the admin token is kept in the tab's `sessionStorage` and sent as `Authorization: Bearer`),
//! so the UI can do nothing the API does not allow, and every page reads pages of logs and pre-aggregated
//! stats only, never the whole log. docs/observability.md ("Web UI") says why it is built this way.
//!
//! Every answer here carries a strict Content-Security-Policy (scripts, styles and fetches from this
//! origin only; no inline script or style, no frames, no plugins), `x-frame-options: DENY` and `nosniff`:
//! the page renders text from callers (model names, log messages), and even if some slipped into markup
//! the browser would not run it. The scripts never build HTML from strings; they create elements and set
//! their text.

use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::AppState;

/// Scripts, styles, images and fetches from this origin only; nothing inline, nothing framed.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                              font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file of the UI.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset { path: "app.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../ui/app.js") },
    Asset { path: "lib.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../ui/lib.js") },
    Asset { path: "chart.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../ui/chart.js") },
    Asset { path: "dashboard.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../ui/dashboard.js") },
    Asset { path: "logs.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../ui/logs.js") },
    Asset { path: "providers.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../ui/providers.js") },
    Asset { path: "entities.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../ui/entities.js") },
    Asset { path: "app.css", content_type: "text/css; charset=utf-8", body: include_str!("../ui/app.css") },
    Asset { path: "favicon.svg", content_type: "image/svg+xml", body: include_str!("../ui/favicon.svg") },
];

const INDEX: Asset = Asset { path: "index.html", content_type: "text/html; charset=utf-8", body: include_str!("../ui/index.html") };
/// What `/` shows when the management API is off: how to turn it on (no script needed).
const OFF: Asset = Asset { path: "off.html", content_type: "text/html; charset=utf-8", body: include_str!("../ui/off.html") };

/// A strong validator per file, computed once: a reload asks `If-None-Match` and gets a 304, and a new
/// binary's files are never mistaken for the old ones (no caching by time).
fn etag(asset: &Asset) -> &'static str {
    static TAGS: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .chain([&INDEX, &OFF])
            .map(|a| {
                let d = Sha256::digest(a.body.as_bytes());
                let hex: String = d.iter().take(12).map(|x| format!("{x:02x}")).collect();
                (a.path, format!("\"{hex}\""))
            })
            .collect()
    });
    tags.iter().find(|(p, _)| *p == asset.path).map_or("\"0\"", |(_, t)| t.as_str())
}

fn respond(headers: &HeaderMap, asset: &Asset) -> Response {
    let tag = etag(asset);
    let fresh = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { (StatusCode::OK, asset.body).into_response() };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Revalidated on every load (cheap: a 304), so an upgraded gateway never runs yesterday's script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// `GET /`: the shell, or, with the management API off, the page that says how to turn it on.
pub async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    respond(&headers, if state.admin.is_some() { &INDEX } else { &OFF })
}

/// `GET /ui/{file}`: one of the UI's files; anything else is the API's 404.
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.path == file) {
        Some(a) => respond(&headers, a),
        None => crate::handlers::not_found().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_module_the_scripts_import_is_served() {
        // A module imported but missing from ASSETS would be a blank page in the browser.
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            for line in a.body.lines().filter(|l| l.starts_with("import ")) {
                let from = line.rsplit(" from ").next().expect(line).trim().trim_end_matches(';').trim_matches(|c| c == '\'' || c == '"');
                let name = from.strip_prefix("./").expect("imports are relative to /ui/");
                assert!(ASSETS.iter().any(|x| x.path == name), "{} imports {name}, which is not served", a.path);
            }
        }
        assert!(INDEX.body.contains("src=\"/ui/app.js\""));
    }

    #[test]
    fn no_inline_script_or_markup_from_strings() {
        // The CSP forbids inline scripts; the scripts never parse strings as HTML.
        assert!(!INDEX.body.contains("<script>") && !OFF.body.contains("<script"));
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            for banned in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
                assert!(!a.body.contains(banned), "{} uses {banned}", a.path);
            }
        }
    }

    #[test]
    fn etags_differ_by_content_and_a_match_is_a_304() {
        let a = etag(&ASSETS[0]);
        let b = etag(&ASSETS[1]);
        assert_ne!(a, b);
        assert!(a.starts_with('"') && a.len() == 26);
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(a).unwrap());
        let r = respond(&h, &ASSETS[0]);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        let r = respond(&HeaderMap::new(), &ASSETS[0]);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
    }

    async fn get(admin: Option<crate::admin::AdminToken>, path: &str) -> (StatusCode, HeaderMap, String) {
        use tower::ServiceExt as _;
        let env = std::collections::BTreeMap::new();
        let cfg = switchyard_engine::config::parse_str("providers:\n  local:\n    type: ollama\n    base_url: http://127.0.0.1:9\n", &env)
            .unwrap();
        let gateway = std::sync::Arc::new(switchyard_engine::Gateway::new(&cfg).unwrap());
        let state = AppState { gateway, server: cfg.server.clone(), metrics: None, admin, request_log: None };
        let app = crate::router(state, "127.0.0.1:8080".parse().unwrap());
        let req = axum::http::Request::get(path).header("host", "127.0.0.1:8080").body(axum::body::Body::empty()).unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn with_the_management_api_off_the_page_says_how_to_turn_it_on() {
        let (status, headers, body) = get(None, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
        assert!(body.contains("The management API is off") && body.contains("SWITCHYARD_ADMIN_TOKEN"), "{body}");
        assert!(!body.contains("app.js"), "no script to run without an API to call");
        let (_, _, on) = get(Some(crate::admin::AdminToken::new("t")), "/").await;
        assert!(on.contains("/ui/app.js") && !on.contains("is off"));
        let (status, headers, js) = get(None, "/ui/app.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert!(js.contains("import "));
        let (status, _, body) = get(None, "/ui/../Cargo.toml").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
}
