//! Walking skeleton: plain HTTP through real Envoy, whose gRPC ext_authz v3 filter asks
//! a real `portcullis serve`, in front of an in-process echo upstream.
//!
//! Needs Envoy: `scripts/install-test-deps.sh` (or `ENVOY_BIN=/path/to/envoy`).
//! Without it these tests fail; they never skip.

use crate::support;

use reqwest::StatusCode;
use support::envoy::{self, Envoy};
use support::ext_authz::{self, Answer};
use support::portcullis::Portcullis;
use support::steps::Steps;
use support::tokens::{bearer, Jwt};
use support::upstream::{EchoServer, Echoed};

/// The quickstart config from the HS256 tutorial (TokenIntrospector
/// `external-auth-server`, a json-schema AccessPolicy, User `some-user-id`).
const QUICKSTART: &str = "examples/quickstart";
const ISS: &str = "https://auth.example.com";
const SECRET: &str = "very-secret";
/// A second trusted issuer that the quickstart policy (`iss` constant) does not allow.
const OTHER_ISS: &str = "https://other.example.com";
const OTHER_SECRET: &str = "other-secret";
const OTHER_INTROSPECTOR: &str = "\
resourceType: TokenIntrospector
id: other-issuer
type: jwt
jwt:
  iss: https://other.example.com
  secret: other-secret
";
/// Secrets that must never appear in an answer.
const SECRETS: &[&str] = &[SECRET, OTHER_SECRET];

struct Harness {
    envoy: Envoy,
    upstream: EchoServer,
}

impl Harness {
    async fn get(
        &self,
        path: &str,
        authorization: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut all: Vec<(&str, &str)> = authorization
            .map(|auth| ("authorization", auth))
            .into_iter()
            .collect();
        all.extend_from_slice(headers);
        ext_authz::get(&self.envoy.url(path), &all).await
    }

    /// Asserts a valid token got through, and returns what the upstream saw.
    async fn expect_allowed(&self, path: &str, token: &str, headers: &[(&str, &str)]) -> Echoed {
        let answer = self.get(path, Some(&bearer(token)), headers).await;
        self.upstream.answered_once(&answer, path)
    }

    /// Asserts a deny with `status`, the RFC 6750 challenge on 401, a JSON body, no
    /// leak of the token or a secret, and that the upstream never saw the request.
    async fn expect_denied(&self, path: &str, token: Option<&str>, status: StatusCode) -> Answer {
        let answer = self.get(path, token.map(bearer).as_deref(), &[]).await;
        let what = format!("GET {path} with token {token:?}");
        answer.assert_denial(&what, status, token.is_some());
        self.upstream.assert_never_saw(path);
        assert_no_leak(&what, &answer, token);
        answer
    }
}

/// Neither the token (whole, or its claims or signature part) nor a secret may appear
/// in the body or the headers of an answer.
fn assert_no_leak(what: &str, answer: &Answer, token: Option<&str>) {
    let mut needles: Vec<&str> = SECRETS.to_vec();
    if let Some(token) = token {
        needles.push(token);
        // The header segment is shared by every token of the same alg: skip it.
        needles.extend(token.split('.').skip(1).filter(|s| s.len() >= 8));
    }
    let mut haystacks = vec![answer.body.clone()];
    for (name, value) in &answer.headers {
        haystacks.push(format!(
            "{name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    for needle in needles {
        for hay in &haystacks {
            assert!(
                !hay.contains(needle),
                "{what}: answer leaks {needle:?}: {hay:?}"
            );
        }
    }
}

/// The name of the quickstart's json-schema AccessPolicy (the one that allows
/// `https://auth.example.com`), read from the example config itself.
/// The upstream saw portcullis's own subject, issuer and policy headers.
fn assert_identity(seen: &Echoed, subject: &str, policy: &str) {
    seen.assert_identity(Some(subject), Some(ISS), Some(policy));
}

fn quickstart_policy_name() -> String {
    let dir = support::repo_path(QUICKSTART);
    assert!(
        dir.is_dir(),
        "{} is missing: the quickstart config lives on branch main",
        dir.display()
    );
    let policies = support::resources_of_kind(&dir, "AccessPolicy");
    let json_schema: Vec<_> = policies
        .iter()
        .filter(|(_, body)| body.get("engine").and_then(|e| e.as_str()) == Some("json-schema"))
        .collect();
    assert_eq!(
        json_schema.len(),
        1,
        "expected one json-schema AccessPolicy in {QUICKSTART}, found {policies:?}"
    );
    json_schema[0].0.clone()
}

/// The name of the quickstart's one User (`some-user-id` in the tutorial).
fn quickstart_user_name() -> String {
    let users = support::resources_of_kind(&support::repo_path(QUICKSTART), "User");
    assert_eq!(
        users.len(),
        1,
        "expected one User in {QUICKSTART}: {users:?}"
    );
    users[0].0.clone()
}

#[test]
fn envoy_template_validates() {
    let vars = envoy::grpc_ext_authz_vars(
        support::free_port(),
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    for template in [
        envoy::GRPC_EXT_AUTHZ_TEMPLATE,
        envoy::HTTP_EXT_AUTHZ_TEMPLATE,
    ] {
        let rendered = envoy::render_to_file(template, &vars);
        envoy::validate(rendered.path());
    }
}

/// The Envoy configurations that deploy/ ships load in the real Envoy; their admin port is
/// on loopback only; and each address a cluster install must adapt (the listener, the
/// portcullis and app endpoints) is marked `CHANGE` on the line before it.
#[test]
fn deploy_envoy_examples_validate() {
    for example in [envoy::SHIPPED_GRPC, envoy::SHIPPED_HTTP] {
        let path = support::repo_path(example);
        envoy::validate(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        let config: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let admin = &config["admin"]["address"]["socket_address"];
        assert_eq!(
            admin["address"].as_str(),
            Some("127.0.0.1"),
            "{example}: admin"
        );
        assert!(
            admin["port_value"].as_u64().is_some(),
            "{example}: admin port"
        );
        let lines: Vec<&str> = text.lines().collect();
        let addresses: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].contains("socket_address: { address:"))
            .filter(|&i| !lines[i].contains("127.0.0.1"))
            .collect();
        assert_eq!(addresses.len(), 3, "{example}: listener, portcullis, app");
        for i in addresses {
            assert!(
                lines[i - 1].trim_start().starts_with("# CHANGE:"),
                "{example}:{}: no `# CHANGE:` comment before {}",
                i + 1,
                lines[i].trim()
            );
        }
    }
}

/// Harness self-check, and a contract point of its own: with the authorizer down,
/// Envoy (failure_mode_allow: false) denies and the upstream sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_denies_when_authorizer_is_unreachable() {
    let upstream = EchoServer::start();
    let closed_port = support::free_port();
    let envoy = Envoy::grpc_ext_authz(closed_port, upstream.port()).await;
    let client = support::http_client();
    let token = Jwt::new(ISS, "basic").sign_hs256(SECRET);
    let resp = client
        .get(envoy.url("/fhir/Patient"))
        .header("authorization", bearer(&token))
        .send()
        .await
        .expect("GET through Envoy");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(
        upstream.requests().is_empty(),
        "upstream saw {:?}",
        upstream.requests()
    );
}

#[derive(Clone, Copy, Debug)]
enum Flavour {
    Grpc,
    Http,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walking_skeleton_through_envoy() {
    walking_skeleton(Flavour::Grpc).await
}

/// The same contract through Envoy's `http_service` (Istio's `envoyExtAuthzHttp`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walking_skeleton_through_envoy_http_ext_authz() {
    walking_skeleton(Flavour::Http).await
}

async fn walking_skeleton(flavour: Flavour) {
    let policy = quickstart_policy_name();
    let extra = tempfile::tempdir().expect("tempdir");
    std::fs::write(extra.path().join("other-issuer.yaml"), OTHER_INTROSPECTOR)
        .expect("write other-issuer.yaml");

    let upstream = EchoServer::start();
    let portcullis = Portcullis::builder()
        .config(QUICKSTART)
        .config(extra.path())
        .start()
        .await;
    let envoy = match flavour {
        Flavour::Grpc => {
            Envoy::grpc_ext_authz(portcullis.grpc_addr().port(), upstream.port()).await
        }
        Flavour::Http => {
            Envoy::http_ext_authz(portcullis.http_addr().port(), upstream.port()).await
        }
    };
    let h = Harness { envoy, upstream };
    let valid = Jwt::new(ISS, "basic").sign_hs256(SECRET);
    let mut steps = Steps::new();

    steps
        .run(
            "valid HS256 token is allowed with identity headers",
            async {
                let seen = h.expect_allowed("/fhir/Patient/allowed", &valid, &[]).await;
                assert_identity(&seen, "basic", &policy);
            },
        )
        .await;

    steps
        .run(
            "extra claims and a query string do not disturb an allow",
            async {
                let token = Jwt::new(ISS, "basic")
                    .claim("scope", "patient/*.read")
                    .claim("roles", serde_json::json!(["a", "b"]))
                    .nbf_in(-60)
                    .sign_hs256(SECRET);
                let answer = h
                    .get("/fhir/Patient/query?_count=1", Some(&bearer(&token)), &[])
                    .await;
                let seen = answer.echoed();
                assert_eq!(seen.query.as_deref(), Some("_count=1"));
                assert_eq!(seen.header("x-portcullis-subject"), Some("basic"));
            },
        )
        .await;

    steps
        .run(
            "token from the other trusted issuer is refused by policy: 403",
            async {
                let token = Jwt::new(OTHER_ISS, "basic").sign_hs256(OTHER_SECRET);
                h.expect_denied(
                    "/fhir/Patient/other-issuer",
                    Some(&token),
                    StatusCode::FORBIDDEN,
                )
                .await;
            },
        )
        .await;

    let invalid: Vec<(&str, String)> = vec![
        (
            "expired",
            Jwt::new(ISS, "basic").expired().sign_hs256(SECRET),
        ),
        (
            "wrongly-signed",
            Jwt::new(ISS, "basic").sign_hs256("not-the-secret"),
        ),
        ("alg-none", Jwt::new(ISS, "basic").alg_none()),
        (
            "alg-none-with-real-signature",
            format!(
                "{}{}",
                Jwt::new(ISS, "basic").alg_none(),
                valid.rsplit('.').next().unwrap()
            ),
        ),
        (
            "not-yet-valid",
            Jwt::new(ISS, "basic").nbf_in(3600).sign_hs256(SECRET),
        ),
        (
            "untrusted-issuer",
            Jwt::new("https://unknown.example.com", "basic").sign_hs256(SECRET),
        ),
        ("not-a-jwt", "not-a-jwt".to_string()),
    ];
    for (name, token) in &invalid {
        steps
            .run(&format!("{name} token: 401 invalid_token"), async {
                h.expect_denied(
                    &format!("/fhir/Patient/{name}"),
                    Some(token),
                    StatusCode::UNAUTHORIZED,
                )
                .await;
            })
            .await;
    }

    steps
        .run("no token at all: 401 with a Bearer challenge", async {
            h.expect_denied("/fhir/Patient/anonymous", None, StatusCode::UNAUTHORIZED)
                .await;
        })
        .await;

    steps
        .run(
            "client-sent x-portcullis-* headers never reach the upstream",
            async {
                let spoofed = [
                    ("x-portcullis-user", "admin"),
                    ("x-portcullis-user", "root"),
                    ("x-portcullis-subject", "mallory"),
                    ("x-portcullis-issuer", "https://evil.example.com"),
                    ("x-portcullis-policy", "spoofed-policy"),
                ];
                let seen = h
                    .expect_allowed("/fhir/Patient/spoofed", &valid, &spoofed)
                    .await;
                // sub `basic` names no User in the quickstart, so no user header is due:
                // none may arrive, neither the client's nor one of portcullis's own.
                let users = seen.header_values("x-portcullis-user");
                assert!(
                    users.is_empty(),
                    "x-portcullis-user reached the upstream, though no User is due: {users:?}"
                );
                assert_identity(&seen, "basic", &policy);
            },
        )
        .await;

    steps
        .run(
            "a token naming a known User gets portcullis's x-portcullis-user, not the client's",
            async {
                let user = quickstart_user_name();
                let token = Jwt::new(ISS, &user).sign_hs256(SECRET);
                let seen = h
                    .expect_allowed(
                        "/fhir/Patient/known-user",
                        &token,
                        &[("x-portcullis-user", "admin")],
                    )
                    .await;
                assert_eq!(
                    seen.header("x-portcullis-user"),
                    Some(user.as_str()),
                    "{seen:#?}"
                );
                assert_eq!(
                    seen.header("x-portcullis-subject"),
                    Some(user.as_str()),
                    "{seen:#?}"
                );
            },
        )
        .await;

    steps
        .run(
            "without a sub, the client's x-portcullis-subject is still removed",
            async {
                let token = Jwt::new(ISS, "ignored").without("sub").sign_hs256(SECRET);
                let seen = h
                    .expect_allowed(
                        "/fhir/Patient/no-sub",
                        &token,
                        &[
                            ("x-portcullis-subject", "mallory"),
                            ("x-portcullis-user", "admin"),
                        ],
                    )
                    .await;
                assert_eq!(seen.header("x-portcullis-subject"), None, "{seen:#?}");
                assert_eq!(seen.header("x-portcullis-user"), None, "{seen:#?}");
                assert_eq!(seen.header("x-portcullis-issuer"), Some(ISS), "{seen:#?}");
            },
        )
        .await;

    steps
        .run(
            "spoofed headers with a bad token are denied and go nowhere",
            async {
                let token = Jwt::new(ISS, "admin").sign_hs256("not-the-secret");
                let answer = h
                    .get(
                        "/fhir/Patient/spoofed-bad-token",
                        Some(&bearer(&token)),
                        &[("x-portcullis-user", "admin"), ("x-portcullis-policy", "p")],
                    )
                    .await;
                assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:#?}");
                assert!(h
                    .upstream
                    .requests_to("/fhir/Patient/spoofed-bad-token")
                    .is_empty());
            },
        )
        .await;

    steps
        .run("portcullis's log holds no token and no secret", async {
            let log = portcullis.log();
            let mut needles: Vec<&str> = SECRETS.to_vec();
            for token in std::iter::once(&valid).chain(invalid.iter().map(|(_, t)| t)) {
                needles.extend(token.split('.').skip(1).filter(|s| s.len() >= 8));
            }
            for needle in needles {
                assert!(!log.contains(needle), "portcullis logged {needle:?}");
            }
        })
        .await;

    // On failure this panics while portcullis and Envoy are alive; their logs are
    // printed as they drop.
    steps.finish();
    drop(portcullis);
}
