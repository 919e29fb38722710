//! The explain page, on the admin listener over plain HTTP: an operator pastes a token and
//! a request and sees the decision and its trace as a tree.
//!
//! - `GET /` (and `GET /explain`): the page; `/explain.js` and `/explain.css` its script
//!   and style. All three are compiled in (`explain_page/`), hold nothing secret and load
//!   nothing from elsewhere; the Content-Security-Policy allows only this origin.
//! - `POST /explain`: the operator token as `Authorization: Bearer ...` (401 without one,
//!   403 with another), a JSON body `{token, method, path, headers: {name: value}, host,
//!   scheme, namespace}` (every field optional), and the answer `{decision: {allowed, status, reason,
//!   message, policy}, trace, tree}`: the trace as `portcullis explain --output json`
//!   prints it and the tree as `portcullis explain` does. The token is never shown back.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};

use super::operator::{AdminService, ExplainInput, Refusal};

const PAGE: &str = include_str!("explain_page/index.html");
const SCRIPT: &str = include_str!("explain_page/explain.js");
const STYLE: &str = include_str!("explain_page/explain.css");

/// Only this origin's script, style and `fetch`; no frames, no form posted anywhere (the
/// script posts, so a page without it never puts the tokens in a URL), no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; \
    base-uri 'none'; frame-ancestors 'none'";

/// A request to explain is a token and a request line with headers: far below this.
const BODY_LIMIT: usize = 256 * 1024;

/// The page's routes (the gRPC service shares the listener: see
/// [`super::admin::router`]).
pub fn router(admin: AdminService) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/explain", get(page).post(explain))
        .route("/explain.js", get(script))
        .route("/explain.css", get(style))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(admin)
}

async fn page() -> Response {
    respond(StatusCode::OK, "text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    respond(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    respond(StatusCode::OK, "text/css; charset=utf-8", STYLE)
}

/// Every answer of this listener's HTTP side: never cached, never framed, never sniffed,
/// never sending a referrer.
fn respond(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Response {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    (status, headers, body.into()).into_response()
}

/// Anything else on the admin listener.
pub async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such page on the admin listener",
    )
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

fn error(status: StatusCode, error: &str, message: &str) -> Response {
    let body = serde_json::to_string(&ErrorBody { error, message }).unwrap_or_default();
    let mut response = respond(status, "application/json", body);
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
        );
    }
    response
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ExplainBody {
    token: String,
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    host: String,
    scheme: String,
    /// The request's namespace (empty: none).
    namespace: String,
}

#[derive(Serialize)]
struct ExplainAnswer {
    decision: DecisionView,
    trace: serde_json::Value,
    tree: String,
}

#[derive(Serialize)]
struct DecisionView {
    allowed: bool,
    status: u16,
    reason: String,
    message: String,
    policy: Option<String>,
}

async fn explain(State(admin): State<AdminService>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match admin.check_operator(authorization) {
        Ok(()) => {}
        Err(Refusal::NoToken) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the explain API needs the operator token as `Authorization: Bearer ...`",
            )
        }
        Err(Refusal::WrongToken) => {
            return error(StatusCode::FORBIDDEN, "forbidden", "not the operator token")
        }
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the request to explain as `Content-Type: application/json`",
        );
    }
    // The error names where the body is wrong, never what it holds: a value in it may be
    // the token.
    let body: ExplainBody = match serde_path_to_error::deserialize(
        &mut serde_json::Deserializer::from_slice(&body),
    ) {
        Ok(body) => body,
        Err(e) => {
            let at = e.path().to_string();
            let message = format!(
                    "the body is not a request to explain: a {:?} error at `{at}` (expected \
                     {{token, method, path, headers: {{name: value}}, host, scheme, namespace}}, all strings)",
                    e.inner().classify()
                );
            return error(StatusCode::BAD_REQUEST, "bad_request", &message);
        }
    };
    let explained = admin
        .explain(ExplainInput {
            method: body.method,
            scheme: body.scheme,
            host: body.host,
            path: body.path,
            headers: body.headers.into_iter().collect(),
            token: body.token,
            namespace: body.namespace,
        })
        .await;
    let answer = ExplainAnswer {
        decision: DecisionView {
            allowed: explained.allowed,
            status: explained.status,
            reason: explained.reason,
            message: explained.message,
            policy: explained.policy,
        },
        trace: explained.trace,
        tree: explained.tree,
    };
    match serde_json::to_string(&answer) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("the answer does not serialise: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a browser would fetch from elsewhere: a URL with a scheme or a
    /// scheme-relative one, in an attribute, a CSS `url()` or `@import`.
    fn external_references(text: &str) -> Vec<&str> {
        let lower = text.to_ascii_lowercase();
        ["http:", "https:", "//", "url(", "@import", "data:"]
            .iter()
            .filter(|needle| {
                lower.match_indices(*needle).any(|(i, _)| {
                    // `//` opening a comment in the script is fine; in a quoted URL it is not.
                    **needle != "//" || lower[..i].ends_with(['"', '\'', '(', '='])
                })
            })
            .copied()
            .collect()
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for (name, text) in [("page", PAGE), ("script", SCRIPT), ("style", STYLE)] {
            assert_eq!(
                external_references(text),
                Vec::<&str>::new(),
                "{name} refers to something outside the admin listener"
            );
        }
        assert!(PAGE.contains(r#"<script src="explain.js" defer></script>"#));
        assert!(PAGE.contains(r#"<link rel="stylesheet" href="explain.css">"#));
        assert!(
            !PAGE.contains("<script>") && !PAGE.contains(" style="),
            "no inline script or style: the policy allows neither"
        );
    }

    #[test]
    fn the_script_never_writes_markup() {
        // Every value shown (claims, found values, messages) is text, set as text.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(sink), "the script uses {sink}");
        }
    }
}
