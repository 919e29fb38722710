//! Helpers for the user tests: a Keycloak-shaped stub identity provider, the real
//! portcullis binary, and an ext_authz gRPC client.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const PRIVATE_KEY: &str = include_str!("../fixtures/keys/users-rs256.pem");
pub const PUBLIC_KEY: &str = include_str!("../fixtures/keys/users-rs256.pub.pem");
pub const REALM_PATH: &str = "/realms/myrealm";
/// The client and service-account subject of the tutorial's example JWT.
pub const TUTORIAL_CLIENT: &str = "my-client";
pub const TUTORIAL_SUB: &str = "74ae9aaf-5681-4231-96d3-eeec940a20b4";

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

#[derive(Default)]
struct IdpState {
    issuer: String,
    userinfo_calls: Mutex<HashMap<String, usize>>,
    userinfo_total: AtomicUsize,
    certs_fetches: AtomicUsize,
    failing: Mutex<HashSet<String>>,
}

/// A Keycloak realm, as far as the tutorial needs one: the token endpoint
/// (client_credentials, RS256 access tokens shaped like the tutorial's example JWT), the
/// realm's JWKS (`/protocol/openid-connect/certs`, which the tutorial's `jwks_uri` names),
/// and the userinfo endpoint; the last two count their calls.
pub struct StubIdp {
    pub base: String,
    pub issuer: String,
    state: Arc<IdpState>,
}

impl StubIdp {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let issuer = format!("{base}{REALM_PATH}");
        let state = Arc::new(IdpState {
            issuer: issuer.clone(),
            ..Default::default()
        });
        let app = Router::new()
            .route(
                &format!("{REALM_PATH}/protocol/openid-connect/token"),
                post(token_endpoint),
            )
            .route(
                &format!("{REALM_PATH}/protocol/openid-connect/userinfo"),
                get(userinfo_endpoint),
            )
            .route(
                &format!("{REALM_PATH}/protocol/openid-connect/certs"),
                get(certs_endpoint),
            )
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        StubIdp {
            base,
            issuer,
            state,
        }
    }

    pub fn userinfo_url(&self) -> String {
        format!("{}/protocol/openid-connect/userinfo", self.issuer)
    }

    /// The realm's JWKS, as the tutorial's TokenIntrospector names it in `jwks_uri`.
    pub fn certs_url(&self) -> String {
        format!("{}/protocol/openid-connect/certs", self.issuer)
    }

    /// How many times the JWKS was fetched.
    pub fn certs_fetches(&self) -> usize {
        self.state.certs_fetches.load(Ordering::SeqCst)
    }

    /// The tutorial's `curl -d grant_type=client_credentials ...`.
    pub async fn client_credentials(&self, client_id: &str) -> String {
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/protocol/openid-connect/token", self.issuer))
            .form(&[
                ("client_id", client_id),
                ("client_secret", "YOUR_CLIENT_SECRET"),
                ("grant_type", "client_credentials"),
                ("scope", "openid profile email"),
            ])
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["access_token"].as_str().unwrap().to_string()
    }

    pub fn userinfo_calls(&self, sub: &str) -> usize {
        self.state
            .userinfo_calls
            .lock()
            .unwrap()
            .get(sub)
            .copied()
            .unwrap_or(0)
    }

    pub fn userinfo_total(&self) -> usize {
        self.state.userinfo_total.load(Ordering::SeqCst)
    }

    /// Userinfo answers 500 for this subject from now on.
    pub fn fail_userinfo_for(&self, sub: &str) {
        self.state.failing.lock().unwrap().insert(sub.to_string());
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn token_endpoint(State(state): State<Arc<IdpState>>, body: String) -> Response {
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
        "iss": state.issuer,
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
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(SIGNING_KID.into());
    header.typ = Some("JWT".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(PRIVATE_KEY.as_bytes()).unwrap(),
    )
    .unwrap();
    Json(json!({"access_token": token, "expires_in": 300, "token_type": "Bearer", "scope": "profile email"}))
        .into_response()
}

/// The kid of the realm's signing key, in its tokens' header and its JWKS.
pub const SIGNING_KID: &str = "users-rs256";

/// Keycloak's JWKS: the realm's RS256 signing key (public part of [`PRIVATE_KEY`]) and,
/// as Keycloak publishes by default, an RSA-OAEP encryption key that must not be used
/// to verify anything.
pub fn realm_jwks() -> Value {
    let key = EncodingKey::from_rsa_pem(PRIVATE_KEY.as_bytes()).unwrap();
    let mut sig = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    sig.common.key_id = Some(SIGNING_KID.into());
    sig.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    let enc_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keys/rsa-b.jwk.json"
    );
    let mut enc: Value = serde_json::from_str(&std::fs::read_to_string(enc_path).unwrap()).unwrap();
    enc["kid"] = json!("users-rsa-oaep");
    enc["use"] = json!("enc");
    enc["alg"] = json!("RSA-OAEP");
    json!({"keys": [serde_json::to_value(&sig).unwrap(), enc]})
}

async fn certs_endpoint(State(state): State<Arc<IdpState>>) -> Response {
    state.certs_fetches.fetch_add(1, Ordering::SeqCst);
    Json(realm_jwks()).into_response()
}

/// Keycloak's userinfo: the bearer token must be one this realm signed.
async fn userinfo_endpoint(State(state): State<Arc<IdpState>>, headers: HeaderMap) -> Response {
    state.userinfo_total.fetch_add(1, Ordering::SeqCst);
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[&state.issuer]);
    validation.validate_aud = false;
    let key = DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
    let claims = match jsonwebtoken::decode::<Value>(token, &key, &validation) {
        Ok(data) => data.claims,
        Err(_) => return StatusCode::UNAUTHORIZED.into_response(),
    };
    let sub = claims["sub"].as_str().unwrap_or_default().to_string();
    *state
        .userinfo_calls
        .lock()
        .unwrap()
        .entry(sub.clone())
        .or_default() += 1;
    // Slow enough that concurrent first requests overlap.
    tokio::time::sleep(Duration::from_millis(150)).await;
    if state.failing.lock().unwrap().contains(&sub) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    Json(json!({
        "sub": sub,
        "email_verified": claims["email_verified"],
        "preferred_username": claims["preferred_username"],
    }))
    .into_response()
}

/// The tutorial's three resources, pointed at the stub, plus `extra` documents. The
/// TokenIntrospector is the tutorial's: `jwt.iss` and the realm's `jwks_uri`.
pub fn write_tutorial_config(dir: &Path, idp: &StubIdp, extra: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("identity-provider.yaml"),
        format!(
            "id: keycloak\nscopes:\n  - profile\n  - openid\nsystem: keycloak\n\
             userinfo_endpoint: {}\nuserinfo-source: userinfo-endpoint\n\
             resourceType: IdentityProvider\ntitle: Keycloak\nactive: true\n",
            idp.userinfo_url()
        ),
    )
    .unwrap();
    let introspector = json!({
        "resourceType": "TokenIntrospector",
        "id": "keycloak-jwt-introspector",
        "type": "jwt",
        "jwt": {"iss": idp.issuer},
        "jwks_uri": idp.certs_url(),
        "identity_provider": {"reference": "IdentityProvider/keycloak"},
    });
    std::fs::write(
        dir.join("token-introspector.yaml"),
        serde_yaml::to_string(&introspector).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("access-policy.yaml"),
        format!(
            "resourceType: AccessPolicy\nid: keycloak-users-policy\nengine: matcho\n\
             matcho:\n  jwt:\n    iss: {}\n{extra}",
            idp.issuer
        ),
    )
    .unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary, `serve`d on free ports; killed when dropped.
pub struct Portcullis {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Portcullis {
    pub async fn serve(config: &Path, users_dir: &Path) -> Self {
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("portcullis.log");
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--config"])
            .arg(config)
            .arg("--users-dir")
            .arg(users_dir)
            .arg("--create-users")
            .args(["--grpc-addr", &grpc.to_string()])
            .args(["--http-addr", &http.to_string()])
            .env("RUST_LOG", "debug")
            // The same generous deadlines as support::portcullis (see TEST_DEADLINES).
            .envs([
                ("PORTCULLIS_DECISION_TIMEOUT_MS", "20000"),
                ("PORTCULLIS_IDP_TIMEOUT_MS", "15000"),
            ])
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        let mut p = Portcullis {
            child,
            grpc,
            http,
            log,
            _log_dir: log_dir,
        };
        p.wait_ready().await;
        p
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://{}/readyz", self.http);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("portcullis exited with {status}:\n{}", self.log());
            }
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "portcullis not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn user_event(&self, event: &str) -> u64 {
        let needle = format!("portcullis_user_events_total{{event=\"{event}\"}} ");
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(&needle).map(|n| n.parse().unwrap()))
            .unwrap_or(0)
    }

    pub async fn client(&self) -> AuthorizationClient<tonic::transport::Channel> {
        AuthorizationClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    /// Stop the process and return what it logged.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Portcullis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What Envoy would make of one `Check` answer.
#[derive(Debug)]
pub struct Checked {
    pub allowed: bool,
    pub status: u16,
    /// Headers set on the upstream request (allow) or on the denial.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Checked {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// One `envoy.service.auth.v3.Authorization/Check`, as Envoy builds it.
pub async fn check(
    client: &mut AuthorizationClient<tonic::transport::Channel>,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Checked {
    let mut headers: HashMap<String, String> = [
        (":authority".to_string(), "api.example.com".to_string()),
        (":method".to_string(), method.to_string()),
        (":path".to_string(), path.to_string()),
    ]
    .into_iter()
    .collect();
    if let Some(t) = token {
        headers.insert("authorization".into(), format!("Bearer {t}"));
    }
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "api.example.com".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let response = client.check(request).await.unwrap().into_inner();
    let allowed = response.status.as_ref().map_or(-1, |s| s.code) == 0;
    let header_map = |hs: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]| {
        hs.iter()
            .filter_map(|h| h.header.as_ref())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect::<HashMap<_, _>>()
    };
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) if allowed => Checked {
            allowed,
            status: 200,
            headers: header_map(&ok.headers),
            body: String::new(),
        },
        Some(HttpResponse::DeniedResponse(denied)) if !allowed => Checked {
            allowed,
            status: denied.status.map_or(403, |s| s.code as u16),
            headers: header_map(&denied.headers),
            body: denied.body,
        },
        other => panic!("inconsistent CheckResponse: status {allowed}, {other:?}"),
    }
}

/// The User manifests in a users directory, by file name.
pub fn user_files(dir: &Path) -> HashMap<String, Value> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let text = std::fs::read_to_string(e.path()).unwrap();
            let value = serde_yaml::from_str::<Value>(&text).unwrap_or(Value::Null);
            (name, value)
        })
        .collect()
}
