//! A stub identity provider in-process on 127.0.0.1, whose behaviour a test switches at
//! will and whose every endpoint counts its calls. Below its issuer URL it serves:
//!
//! - `/jwks` (and Keycloak's name for it, `/protocol/openid-connect/certs`): the key set;
//! - `/introspect`: RFC 7662 answers set per token (unknown tokens are inactive);
//! - `/.well-known/openid-configuration`: discovery, naming the issuer and `/jwks`;
//! - `/protocol/openid-connect/token`: Keycloak's client_credentials grant, RS256 access
//!   tokens shaped like the Keycloak tutorial's example JWT, signed with the realm key;
//! - `/protocol/openid-connect/userinfo`: Keycloak's userinfo for tokens the realm signed.
//!
//! [`StubIdp::start`] serves at the root with a key set of the test's choosing
//! ([`StubIdp::start_https`] the same over HTTPS, with a certificate of the test's CA);
//! [`StubIdp::keycloak`] is a Keycloak realm (issuer `<url>/realms/myrealm`) publishing
//! its signing key, as the auto-create-users tutorial uses it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::tokens::{encoding_key, fixture, jwk_with, now, sign};

/// The Keycloak realm of the tutorial.
pub const REALM_PATH: &str = "/realms/myrealm";
/// The realm's signing key: tests/fixtures/keys/users-rs256, also its `kid`.
pub const SIGNING_KEY: &str = "users-rs256";
/// The client and service-account subject of the tutorial's example JWT.
pub const TUTORIAL_CLIENT: &str = "my-client";
pub const TUTORIAL_SUB: &str = "74ae9aaf-5681-4231-96d3-eeec940a20b4";
/// How long userinfo takes: long enough that concurrent first requests overlap.
const USERINFO_DELAY: Duration = Duration::from_millis(150);

/// Keycloak's service-account subject for a client: the tutorial's for `my-client`, else a
/// UUID-shaped digest of the client id (stable, so tests can predict User names).
pub fn sub_of(client_id: &str) -> String {
    if client_id == TUTORIAL_CLIENT {
        return TUTORIAL_SUB.to_string();
    }
    let hex: String = Sha256::digest(client_id.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Keycloak's JWKS: the realm's RS256 signing key and, as Keycloak publishes by default,
/// an RSA-OAEP encryption key (the public part of test key `rsa-b`, kid `users-rsa-oaep`)
/// that must not be used to verify anything.
pub fn realm_jwks() -> Value {
    let key = encoding_key(SIGNING_KEY);
    let mut sig = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256)
        .expect("JWK of the realm key");
    sig.common.key_id = Some(SIGNING_KEY.into());
    sig.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    let enc = jwk_with(
        "rsa-b",
        json!({"kid": "users-rsa-oaep", "use": "enc", "alg": "RSA-OAEP"}),
    );
    json!({"keys": [serde_json::to_value(&sig).expect("JWK as JSON"), enc]})
}

/// How the key set, introspection and discovery endpoints answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Up,
    /// HTTP 503.
    Failing,
    /// Never answers within any deadline (sleeps a minute, then 503).
    Hanging,
    /// HTTP 200 with an HTML error page as `application/json`.
    Garbage,
    /// The right answer, padded past 2 MiB with an extra member.
    Huge,
}

/// What the stub serves and what it was asked; a test may read and change it.
#[derive(Default)]
pub struct StubState {
    pub jwks: Value,
    /// Introspection answers by token; unknown tokens are `{"active": false}`.
    pub answers: HashMap<String, Value>,
    /// The discovery document's `issuer` (default: the stub's own issuer).
    pub discovery_issuer: Option<String>,
    pub mode: Mode,
    /// Added before each answer of the key set, introspection and discovery endpoints.
    pub delay: Duration,
    /// The `Authorization` of each introspection call.
    pub authorizations: Vec<Option<String>>,
    /// The form body of each introspection call.
    pub introspected_forms: Vec<String>,
    /// Userinfo calls with a token the realm signed, by subject.
    pub userinfo_calls: HashMap<String, usize>,
    /// Subjects whose userinfo answers 500.
    pub failing_userinfo: HashSet<String>,
    /// How userinfo answers (apart from `failing_userinfo`).
    pub userinfo_mode: Mode,
}

#[derive(Default)]
struct Hits {
    jwks: AtomicUsize,
    introspection: AtomicUsize,
    discovery: AtomicUsize,
    userinfo: AtomicUsize,
    other: AtomicUsize,
}

#[derive(Clone)]
struct Shared {
    issuer: String,
    state: Arc<Mutex<StubState>>,
    hits: Arc<Hits>,
}

pub struct StubIdp {
    /// `http://127.0.0.1:<port>` (`https://` from [`StubIdp::start_https`]).
    pub url: String,
    /// The URL below which it serves, and the `iss` of the tokens it issues.
    pub issuer: String,
    pub state: Arc<Mutex<StubState>>,
    hits: Arc<Hits>,
    server: tokio::task::JoinHandle<()>,
}

impl StubIdp {
    /// Serves at the root (issuer = URL) with this key set.
    pub async fn start(jwks: Value) -> StubIdp {
        Self::start_at("", jwks, None).await
    }

    /// As [`StubIdp::start`], over HTTPS with `cert` (for 127.0.0.1).
    pub async fn start_https(jwks: Value, cert: &super::tls::ServingCert) -> StubIdp {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key PEM");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.der.clone())], key)
        .expect("server certificate");
        Self::start_at("", jwks, Some(Arc::new(config))).await
    }

    /// A Keycloak realm at [`REALM_PATH`] publishing [`realm_jwks`].
    pub async fn keycloak() -> StubIdp {
        Self::start_at(REALM_PATH, realm_jwks(), None).await
    }

    async fn start_at(
        prefix: &str,
        jwks: Value,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> StubIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stub identity provider");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().expect("local_addr"));
        let shared = Shared {
            issuer: format!("{url}{prefix}"),
            state: Arc::new(Mutex::new(StubState {
                jwks,
                ..StubState::default()
            })),
            hits: Arc::default(),
        };
        let app = Router::new()
            .route(&format!("{prefix}/jwks"), get(jwks_route))
            .route(
                &format!("{prefix}/protocol/openid-connect/certs"),
                get(jwks_route),
            )
            .route(&format!("{prefix}/introspect"), post(introspect_route))
            .route(
                &format!("{prefix}/.well-known/openid-configuration"),
                get(discovery_route),
            )
            .route(
                &format!("{prefix}/protocol/openid-connect/token"),
                post(token_route),
            )
            .route(
                &format!("{prefix}/protocol/openid-connect/userinfo"),
                get(userinfo_route),
            )
            .fallback(other_route)
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            match tls {
                None => axum::serve(listener, app)
                    .await
                    .expect("stub identity provider"),
                Some(tls) => {
                    portcullis::server::tls::serve(listener, tls, app, std::future::pending()).await
                }
            }
        });
        StubIdp {
            url,
            issuer: shared.issuer,
            state: shared.state,
            hits: shared.hits,
            server,
        }
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// The key set under Keycloak's name, as the tutorial's `jwks_uri` gives it.
    pub fn certs_url(&self) -> String {
        format!("{}/protocol/openid-connect/certs", self.issuer)
    }

    pub fn introspection_url(&self) -> String {
        format!("{}/introspect", self.issuer)
    }

    pub fn userinfo_url(&self) -> String {
        format!("{}/protocol/openid-connect/userinfo", self.issuer)
    }

    pub fn set_jwks(&self, jwks: Value) {
        self.state.lock().unwrap().jwks = jwks;
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    pub fn set_userinfo_mode(&self, mode: Mode) {
        self.state.lock().unwrap().userinfo_mode = mode;
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// The introspection answer for `token`.
    pub fn answer(&self, token: &str, answer: Value) {
        self.state
            .lock()
            .unwrap()
            .answers
            .insert(token.to_string(), answer);
    }

    /// Userinfo answers 500 for this subject from now on.
    pub fn fail_userinfo_for(&self, sub: &str) {
        self.state
            .lock()
            .unwrap()
            .failing_userinfo
            .insert(sub.to_string());
    }

    /// Key set fetches (under either name).
    pub fn jwks_fetches(&self) -> usize {
        self.hits.jwks.load(Ordering::SeqCst)
    }

    pub fn introspections(&self) -> usize {
        self.hits.introspection.load(Ordering::SeqCst)
    }

    pub fn discovery_hits(&self) -> usize {
        self.hits.discovery.load(Ordering::SeqCst)
    }

    /// Userinfo calls of any kind, a token the realm signed or not.
    pub fn userinfo_total(&self) -> usize {
        self.hits.userinfo.load(Ordering::SeqCst)
    }

    /// Userinfo calls with a token the realm signed for `sub`.
    pub fn userinfo_calls(&self, sub: &str) -> usize {
        let state = self.state.lock().unwrap();
        state.userinfo_calls.get(sub).copied().unwrap_or(0)
    }

    /// Requests to any other path.
    pub fn other_hits(&self) -> usize {
        self.hits.other.load(Ordering::SeqCst)
    }

    /// The tutorial's `curl -d grant_type=client_credentials ...`: an access token of
    /// this realm for `client_id`.
    pub async fn client_credentials(&self, client_id: &str) -> String {
        let answer: Value = super::http_client()
            .post(format!("{}/protocol/openid-connect/token", self.issuer))
            .form(&[
                ("client_id", client_id),
                ("client_secret", "YOUR_CLIENT_SECRET"),
                ("grant_type", "client_credentials"),
                ("scope", "openid profile email"),
            ])
            .send()
            .await
            .expect("POST the token endpoint")
            .error_for_status()
            .expect("token endpoint status")
            .json()
            .await
            .expect("token endpoint JSON");
        answer["access_token"]
            .as_str()
            .expect("an access_token")
            .to_string()
    }

    /// Stops serving, and returns once connections are refused.
    pub async fn shut_down(&self) {
        self.server.abort();
        let addr = self
            .url
            .split_once("://")
            .map_or("", |(_, a)| a)
            .to_string();
        super::eventually("the stub identity provider to refuse connections", || {
            let addr = addr.clone();
            async move {
                tokio::net::TcpStream::connect(addr)
                    .await
                    .is_err()
                    .then_some(())
            }
        })
        .await;
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
        (st.mode, st.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    misbehave(mode).await
}

/// The answer of a faulty mode, or `None` to answer normally (through [`answer_json`]).
async fn misbehave(mode: Mode) -> Option<Response> {
    match mode {
        Mode::Up | Mode::Huge => None,
        Mode::Failing => Some(StatusCode::SERVICE_UNAVAILABLE.into_response()),
        Mode::Hanging => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Some(StatusCode::SERVICE_UNAVAILABLE.into_response())
        }
        Mode::Garbage => Some(
            (
                [("content-type", "application/json")],
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            )
                .into_response(),
        ),
    }
}

/// `value` as JSON; in [`Mode::Huge`], with a 2 MiB member added, so that only its size
/// is wrong.
fn answer_json(mode: Mode, mut value: Value) -> Response {
    if mode == Mode::Huge {
        value["padding"] = Value::String("x".repeat(2 << 20));
    }
    Json(value).into_response()
}

async fn jwks_route(State(s): State<Shared>) -> Response {
    s.hits.jwks.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = behave(&s).await {
        return r;
    }
    let (mode, jwks) = {
        let st = s.state.lock().unwrap();
        (st.mode, st.jwks.clone())
    };
    answer_json(mode, jwks)
}

async fn discovery_route(State(s): State<Shared>) -> Response {
    s.hits.discovery.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = behave(&s).await {
        return r;
    }
    let issuer = s
        .state
        .lock()
        .unwrap()
        .discovery_issuer
        .clone()
        .unwrap_or_else(|| s.issuer.clone());
    Json(json!({"issuer": issuer, "jwks_uri": format!("{}/jwks", s.issuer)})).into_response()
}

async fn introspect_route(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    s.hits.introspection.fetch_add(1, Ordering::SeqCst);
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
    let (mode, answer) = {
        let st = s.state.lock().unwrap();
        let answer = st.answers.get(&token).cloned();
        (st.mode, answer.unwrap_or_else(|| json!({"active": false})))
    };
    answer_json(mode, answer)
}

async fn token_route(State(s): State<Shared>, body: String) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || client_id.is_empty()
        || form.get("client_secret").is_none_or(String::is_empty)
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request"})),
        )
            .into_response();
    }
    let now = now();
    // The tutorial's example JWT, issued now.
    let claims = json!({
        "exp": now + 300,
        "iat": now,
        "jti": format!("trrtcc:{}", sub_of(&format!("{client_id}{now}"))),
        "iss": s.issuer,
        "aud": "account",
        "sub": sub_of(&client_id),
        "typ": "Bearer",
        "azp": client_id,
        "acr": "1",
        "allowed-origins": ["/*"],
        "realm_access": {"roles": ["default-roles-myrealm", "offline_access", "uma_authorization"]},
        "resource_access": {"account": {"roles": ["manage-account", "manage-account-links", "view-profile"]}},
        "scope": "profile email",
        "email_verified": false,
        "clientHost": "192.168.112.1",
        "preferred_username": format!("service-account-{client_id}"),
        "clientAddress": "192.168.112.1",
        "client_id": client_id,
    });
    let token = sign(SIGNING_KEY, Algorithm::RS256, Some(SIGNING_KEY), &claims);
    Json(json!({"access_token": token, "expires_in": 300, "token_type": "Bearer", "scope": "profile email"}))
        .into_response()
}

/// Keycloak's userinfo: the bearer token must be one this realm signed.
async fn userinfo_route(State(s): State<Shared>, headers: HeaderMap) -> Response {
    s.hits.userinfo.fetch_add(1, Ordering::SeqCst);
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[&s.issuer]);
    validation.validate_aud = false;
    let public = fixture(&format!("{SIGNING_KEY}.pub.pem"));
    let key = DecodingKey::from_rsa_pem(public.as_bytes()).expect("the realm's public key");
    let claims = match jsonwebtoken::decode::<Value>(token, &key, &validation) {
        Ok(data) => data.claims,
        Err(_) => return StatusCode::UNAUTHORIZED.into_response(),
    };
    let sub = claims["sub"].as_str().unwrap_or_default().to_string();
    *s.state
        .lock()
        .unwrap()
        .userinfo_calls
        .entry(sub.clone())
        .or_default() += 1;
    tokio::time::sleep(USERINFO_DELAY).await;
    let mode = {
        let st = s.state.lock().unwrap();
        if st.failing_userinfo.contains(&sub) {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        st.userinfo_mode
    };
    if let Some(r) = misbehave(mode).await {
        return r;
    }
    let info = json!({
        "sub": sub,
        "email_verified": claims["email_verified"],
        "preferred_username": claims["preferred_username"],
    });
    answer_json(mode, info)
}

async fn other_route(State(s): State<Shared>) -> Response {
    s.hits.other.fetch_add(1, Ordering::SeqCst);
    StatusCode::NOT_FOUND.into_response()
}
