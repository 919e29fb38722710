//! Helpers shared by the `tokens_*` tests: fixture keys, token minting, trust stores, and
//! a stub identity provider whose behaviour the test switches at will.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use portcullis::metrics::Metrics;
use portcullis::resources::TokenIntrospectorSpec;
use portcullis::token::{Introspector, TokenSettings, TokenVerifier, TrustStore};

pub fn fixture(name: &str) -> String {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "keys",
        name,
    ]
    .iter()
    .collect();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The public JWK of a fixture key (`kid` = the fixture's name).
pub fn jwk(name: &str) -> Value {
    serde_json::from_str(&fixture(&format!("{name}.jwk.json"))).unwrap()
}

pub fn jwk_with(name: &str, extra: Value) -> Value {
    let mut k = jwk(name);
    for (field, value) in extra.as_object().unwrap() {
        k[field] = value.clone();
    }
    k
}

/// A fixture's private key, parsed once per test binary (PEM parsing is not free).
pub fn encoding_key(name: &str) -> EncodingKey {
    static KEYS: OnceLock<Mutex<HashMap<String, EncodingKey>>> = OnceLock::new();
    let mut keys = KEYS.get_or_init(Default::default).lock().unwrap();
    keys.entry(name.to_string())
        .or_insert_with(|| {
            let pem = fixture(&format!("{name}.key.pem"));
            match name {
                n if n.starts_with("rsa") => EncodingKey::from_rsa_pem(pem.as_bytes()),
                n if n.starts_with("ec") => EncodingKey::from_ec_pem(pem.as_bytes()),
                _ => EncodingKey::from_ed_pem(pem.as_bytes()),
            }
            .unwrap()
        })
        .clone()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims for `iss`, valid for ten minutes, plus `extra`.
pub fn claims(iss: &str, extra: Value) -> Value {
    let mut c = json!({"iss": iss, "sub": "alice", "iat": now(), "exp": now() + 600});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// A JWT signed with a fixture key, header `kid` as given.
pub fn sign(key: &str, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &encoding_key(key)).unwrap()
}

/// RS256 with `rsa-a`, `kid: rsa-a`.
pub fn rs256(iss: &str, extra: Value) -> String {
    sign(
        "rsa-a",
        Algorithm::RS256,
        Some("rsa-a"),
        &claims(iss, extra),
    )
}

pub fn spec(value: Value) -> TokenIntrospectorSpec {
    serde_json::from_value(value).unwrap()
}

/// A trust store from `(name, spec)` pairs.
pub fn trust(introspectors: &[(&str, Value)]) -> TrustStore {
    let mut store = TrustStore::default();
    for (name, s) in introspectors {
        let i = Introspector::compile(name, &spec(s.clone()))
            .unwrap_or_else(|e| panic!("TokenIntrospector/{name}: {e:?}"));
        store.insert(i).unwrap();
    }
    store
}

/// The production defaults (2 s fetch timeout, 10 s refetch interval).
pub fn settings() -> TokenSettings {
    TokenSettings::default()
}

/// For tests of slowness: a 500 ms fetch timeout.
pub fn quick_timeout() -> TokenSettings {
    TokenSettings {
        fetch_timeout: Duration::from_millis(500),
        ..TokenSettings::default()
    }
}

pub fn verifier(settings: TokenSettings) -> (Arc<TokenVerifier>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (
        Arc::new(TokenVerifier::with_settings(settings, metrics.clone())),
        metrics,
    )
}

/// A `token_events` counter, as exposed on `/metrics`.
pub fn events(metrics: &Metrics, event: &str) -> u64 {
    let needle = format!("portcullis_token_events_total{{event=\"{event}\"}} ");
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).map(|n| n.trim().parse().unwrap()))
        .unwrap_or(0)
}

/// How the stub answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Up,
    /// HTTP 503 on every route.
    Failing,
}

#[derive(Default)]
pub struct StubState {
    pub jwks: Value,
    /// Introspection answers by token; unknown tokens are `{"active": false}`.
    pub answers: HashMap<String, Value>,
    /// The discovery document's `issuer` (default: the stub's own URL).
    pub discovery_issuer: Option<String>,
    pub mode: Option<Mode>,
    pub delay: Duration,
    pub authorizations: Vec<Option<String>>,
    pub introspected_forms: Vec<String>,
}

/// An identity provider in-process on 127.0.0.1: `/jwks`, `/introspect`,
/// `/.well-known/openid-configuration`, each counting its requests.
pub struct StubIdp {
    pub url: String,
    pub state: Arc<Mutex<StubState>>,
    pub jwks_hits: Arc<AtomicUsize>,
    pub introspection_hits: Arc<AtomicUsize>,
    pub discovery_hits: Arc<AtomicUsize>,
    pub other_hits: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Shared {
    url: String,
    state: Arc<Mutex<StubState>>,
    jwks_hits: Arc<AtomicUsize>,
    introspection_hits: Arc<AtomicUsize>,
    discovery_hits: Arc<AtomicUsize>,
    other_hits: Arc<AtomicUsize>,
}

impl StubIdp {
    pub async fn start(jwks: Value) -> StubIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let shared = Shared {
            url: url.clone(),
            state: Arc::new(Mutex::new(StubState {
                jwks,
                ..StubState::default()
            })),
            jwks_hits: Default::default(),
            introspection_hits: Default::default(),
            discovery_hits: Default::default(),
            other_hits: Default::default(),
        };
        let app = Router::new()
            .route("/jwks", get(jwks_route))
            .route("/introspect", post(introspect_route))
            .route("/.well-known/openid-configuration", get(discovery_route))
            .fallback(other_route)
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        StubIdp {
            url,
            state: shared.state,
            jwks_hits: shared.jwks_hits,
            introspection_hits: shared.introspection_hits,
            discovery_hits: shared.discovery_hits,
            other_hits: shared.other_hits,
            server,
        }
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.url)
    }
    pub fn introspection_url(&self) -> String {
        format!("{}/introspect", self.url)
    }
    pub fn set_jwks(&self, jwks: Value) {
        self.state.lock().unwrap().jwks = jwks;
    }
    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }
    pub fn answer(&self, token: &str, answer: Value) {
        self.state
            .lock()
            .unwrap()
            .answers
            .insert(token.to_string(), answer);
    }
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }
    pub fn introspections(&self) -> usize {
        self.introspection_hits.load(Ordering::SeqCst)
    }
    /// Stop serving: connections are refused from now on.
    pub fn shut_down(&self) {
        self.server.abort();
    }
}

impl Drop for StubIdp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn behave(s: &Shared) -> Option<Response> {
    let (mode, delay) = {
        let st = s.state.lock().unwrap();
        (st.mode.unwrap_or(Mode::Up), st.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    (mode == Mode::Failing).then(|| StatusCode::SERVICE_UNAVAILABLE.into_response())
}

async fn jwks_route(State(s): State<Shared>) -> Response {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = behave(&s).await {
        return r;
    }
    let jwks = s.state.lock().unwrap().jwks.clone();
    Json(jwks).into_response()
}

async fn discovery_route(State(s): State<Shared>) -> Response {
    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = behave(&s).await {
        return r;
    }
    let issuer = s
        .state
        .lock()
        .unwrap()
        .discovery_issuer
        .clone()
        .unwrap_or_else(|| s.url.clone());
    Json(json!({"issuer": issuer, "jwks_uri": format!("{}/jwks", s.url)})).into_response()
}

async fn introspect_route(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    s.introspection_hits.fetch_add(1, Ordering::SeqCst);
    {
        let mut st = s.state.lock().unwrap();
        st.authorizations.push(
            headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string()),
        );
        st.introspected_forms.push(body.clone());
    }
    if let Some(r) = behave(&s).await {
        return r;
    }
    let token = form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let answer = s
        .state
        .lock()
        .unwrap()
        .answers
        .get(&token)
        .cloned()
        .unwrap_or_else(|| json!({"active": false}));
    Json(answer).into_response()
}

async fn other_route(State(s): State<Shared>) -> Response {
    s.other_hits.fetch_add(1, Ordering::SeqCst);
    StatusCode::NOT_FOUND.into_response()
}
