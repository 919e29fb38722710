//! The npm `oidc-provider` of tests/oidc (a certified OpenID provider) as a child process,
//! and what its clients do with it: client_credentials tokens, revocation, and an
//! authorization-code login scripted through its dev interactions (login and consent
//! forms), keeping the provider's cookies the way a browser would.
//!
//! Needs node and `scripts/install-test-deps.sh`; a test that uses it fails without
//! them, never skips. Tokens never appear in a panic message of this module.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::Url;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::process::Supervised;
use super::tokens::basic;

/// Resource indicator for which the provider issues JWT (RS256) access tokens.
pub const JWT_API: &str = "urn:portcullis:jwt-api";
/// Resource indicator for which the provider issues opaque access tokens.
pub const OPAQUE_API: &str = "urn:portcullis:opaque-api";
/// Gets client_credentials tokens; may revoke its own.
pub const TEST_CLIENT: (&str, &str) = ("test-client", "test-client-secret");
/// May call the introspection endpoint (portcullis's credential).
pub const INTROSPECTION_CLIENT: (&str, &str) = ("portcullis", "portcullis-secret");
/// Runs the authorization-code flow.
pub const LOGIN_CLIENT: (&str, &str) = ("login-client", "login-client-secret");
pub const LOGIN_REDIRECT_URI: &str = "https://client.example.com/callback";
/// The account of server.mjs's `ACCOUNTS` (its id is its `sub`).
pub const TEST_ACCOUNT: &str = "8d2c4d6e-7f1a-4b3c-9e5d-0a1b2c3d4e5f";

const INSTALL: &str = "run scripts/install-test-deps.sh (needs node >= 20.19 and npm)";
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Redirects and form posts a login may take (auth, login page, resume, consent page,
/// resume, callback: about eight).
const MAX_LOGIN_HOPS: usize = 16;

/// What an authorization-code login ended with.
pub struct Login {
    pub access_token: String,
    pub id_token: String,
    /// The token endpoint's answer without the tokens (`scope`, `token_type`, ...).
    pub token_response: Value,
    /// The dev-interaction pages the flow went through, in order (`login`, `consent`).
    pub prompts: Vec<String>,
}

pub struct OidcProvider {
    process: Supervised,
    issuer: String,
    http: reqwest::Client,
}

impl OidcProvider {
    /// Starts `node tests/oidc/server.mjs 0` and waits for its `READY <issuer>` line.
    pub async fn start() -> OidcProvider {
        let dir: PathBuf = super::repo_path("tests/oidc");
        if !dir.join("node_modules/oidc-provider").is_dir() {
            panic!(
                "{} is missing: {INSTALL}",
                dir.join("node_modules/oidc-provider").display()
            );
        }
        if let Err(e) = Command::new("node").arg("--version").output() {
            panic!("node not found ({e}): {INSTALL}");
        }
        let mut cmd = Command::new("node");
        cmd.arg("server.mjs").arg("0").current_dir(&dir);
        let mut process = Supervised::spawn("oidc-provider", &mut cmd);
        let issuer = super::eventually_within(START_TIMEOUT, "oidc-provider's READY line", || {
            let log = process.log();
            let issuer = log
                .lines()
                .find_map(|l| l.strip_prefix("READY "))
                .map(|issuer| issuer.trim().to_string());
            if issuer.is_none() {
                if let Some(status) = process.exited() {
                    panic!("oidc-provider exited with {status} before READY ({INSTALL})");
                }
            }
            std::future::ready(issuer)
        })
        .await;
        OidcProvider {
            process,
            issuer,
            http: super::http_client(),
        }
    }

    /// `http://127.0.0.1:<port>`, exactly as it writes `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub fn jwks_uri(&self) -> String {
        self.url("/jwks")
    }

    pub fn introspection_url(&self) -> String {
        self.url("/token/introspection")
    }

    pub fn userinfo_url(&self) -> String {
        self.url("/me")
    }

    /// The `Authorization` value portcullis sends to the introspection endpoint.
    pub fn introspection_authorization(&self) -> String {
        basic(INTROSPECTION_CLIENT.0, INTROSPECTION_CLIENT.1)
    }

    pub fn log_report(&self) -> String {
        self.process.log_report()
    }

    /// A client_credentials access token of `test-client` for `resource`, scope `read`.
    pub async fn client_credentials(&self, resource: &str) -> String {
        let answer = self
            .token_request(
                TEST_CLIENT,
                &[
                    ("grant_type", "client_credentials"),
                    ("resource", resource),
                    ("scope", "read"),
                ],
            )
            .await;
        answer["access_token"]
            .as_str()
            .expect("access_token is a string")
            .to_string()
    }

    /// RFC 7009 revocation by the client that got the token.
    pub async fn revoke(&self, token: &str) {
        let response = self
            .http
            .post(self.url("/token/revocation"))
            .basic_auth(TEST_CLIENT.0, Some(TEST_CLIENT.1))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .expect("POST /token/revocation");
        let status = response.status();
        assert!(
            status.is_success(),
            "revocation answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// RFC 7662 introspection as portcullis does it: the provider's own verdict.
    pub async fn introspect(&self, token: &str) -> Value {
        self.http
            .post(self.introspection_url())
            .header("authorization", self.introspection_authorization())
            .form(&[("token", token)])
            .send()
            .await
            .expect("POST /token/introspection")
            .error_for_status()
            .expect("introspection status")
            .json()
            .await
            .expect("introspection JSON")
    }

    /// `GET /me` with the access token: the provider's real userinfo answer.
    pub async fn userinfo(&self, access_token: &str) -> Value {
        let response = self
            .http
            .get(self.userinfo_url())
            .bearer_auth(access_token)
            .send()
            .await
            .expect("GET /me");
        let status = response.status();
        let www = response
            .headers()
            .get("www-authenticate")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        assert_eq!(status, 200, "userinfo refused the token: {www:?}");
        response.json().await.expect("userinfo JSON")
    }

    /// POSTs a form to the token endpoint with client_secret_basic; panics with the
    /// provider's `error` (never a token) unless it answers 200 with an `access_token`.
    async fn token_request(&self, client: (&str, &str), form: &[(&str, &str)]) -> Value {
        let response = self
            .http
            .post(self.url("/token"))
            .basic_auth(client.0, Some(client.1))
            .form(form)
            .send()
            .await
            .expect("POST /token");
        let status = response.status();
        let answer: Value = response.json().await.expect("token endpoint JSON");
        assert!(
            status.is_success() && answer["access_token"].is_string(),
            "token endpoint answered {status}: error {} ({})",
            answer["error"],
            answer["error_description"]
        );
        answer
    }

    /// An authorization-code login of `account` by `login-client` (scope `openid email
    /// profile`, PKCE S256, no resource indicator), driven through the provider's dev
    /// interactions like a browser: follow redirects, fill in the login form (the
    /// account id; dev interactions take any password), accept the consent form, read the
    /// code off the redirect to the client, and redeem it.
    pub async fn login(&self, account: &str) -> Login {
        let browser = reqwest::Client::builder()
            .no_proxy()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("build the browser client");
        let seed = format!("{:?}-{}", SystemTime::now(), std::process::id());
        let verifier = URL_SAFE_NO_PAD.encode(Sha256::digest(format!("verifier-{seed}")));
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = URL_SAFE_NO_PAD.encode(&Sha256::digest(format!("state-{seed}"))[..12]);
        let mut auth = Url::parse(&self.url("/auth")).expect("auth URL");
        auth.query_pairs_mut()
            .append_pair("client_id", LOGIN_CLIENT.0)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid email profile")
            .append_pair("redirect_uri", LOGIN_REDIRECT_URI)
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");

        let form_action =
            regex::Regex::new(r#"<form[^>]*\baction="([^"]+)"[^>]*method="post""#).expect("regex");
        let form_prompt = regex::Regex::new(r#"name="prompt" value="([a-z]+)""#).expect("regex");
        let mut prompts = Vec::new();
        let mut next: (Url, Option<Vec<(&str, String)>>) = (auth, None);
        let mut code = None;
        for _ in 0..MAX_LOGIN_HOPS {
            let (url, form) = next;
            let request = match &form {
                None => browser.get(url.clone()),
                Some(fields) => browser.post(url.clone()).form(fields),
            };
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("login: {url}: {e}"));
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_else(|| panic!("login: {status} from {url} without Location"));
                let target = url.join(location).expect("Location is a URL");
                if target.as_str().starts_with(LOGIN_REDIRECT_URI) {
                    let params: std::collections::HashMap<String, String> =
                        target.query_pairs().into_owned().collect();
                    assert!(
                        !params.contains_key("error"),
                        "login ended with error {:?} ({:?})",
                        params.get("error"),
                        params.get("error_description")
                    );
                    assert_eq!(params.get("state"), Some(&state), "state round trip");
                    // RFC 9207: the authorization response names its issuer.
                    assert_eq!(params.get("iss"), Some(&self.issuer), "iss in the response");
                    code = Some(params.get("code").expect("code in the redirect").clone());
                    break;
                }
                next = (target, None);
                continue;
            }
            let body = response.text().await.unwrap_or_default();
            assert_eq!(status, 200, "login: {url} answered {status}:\n{body}");
            let action = form_action
                .captures(&body)
                .unwrap_or_else(|| panic!("login: no POST form at {url}:\n{body}"))[1]
                .to_string();
            let prompt = form_prompt
                .captures(&body)
                .unwrap_or_else(|| panic!("login: no prompt field at {url}:\n{body}"))[1]
                .to_string();
            let fields = match prompt.as_str() {
                "login" => vec![
                    ("prompt", "login".to_string()),
                    ("login", account.to_string()),
                    ("password", "any password".to_string()),
                ],
                "consent" => vec![("prompt", "consent".to_string())],
                other => panic!("login: unexpected prompt {other:?} at {url}"),
            };
            prompts.push(prompt);
            next = (
                url.join(&action).expect("form action is a URL"),
                Some(fields),
            );
        }
        let code = code.unwrap_or_else(|| {
            panic!("login did not reach {LOGIN_REDIRECT_URI} in {MAX_LOGIN_HOPS} steps (went through {prompts:?})")
        });

        let mut answer = self
            .token_request(
                LOGIN_CLIENT,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", LOGIN_REDIRECT_URI),
                    ("code_verifier", &verifier),
                ],
            )
            .await;
        let take = |answer: &mut Value, field: &str| match answer
            .as_object_mut()
            .and_then(|o| o.remove(field))
        {
            Some(Value::String(s)) => s,
            _ => panic!("token endpoint answer without {field}"),
        };
        let access_token = take(&mut answer, "access_token");
        let id_token = take(&mut answer, "id_token");
        Login {
            access_token,
            id_token,
            token_response: answer,
            prompts,
        }
    }
}
