//! The operator API of a running server: `portcullis.admin.v1.Admin/Explain` gives the
//! same trace as `portcullis explain`, and only to callers with the operator token.

use crate::support;

use portcullis::proto::admin::admin_client::AdminClient;
use portcullis::proto::admin::ExplainRequest;
use support::portcullis::{self as serve, Portcullis};
use support::tokens::Jwt;
use tonic::Code;

const OPERATOR_TOKEN: &str = "operator-token-0123456789abcdef";

fn explain(token: &str) -> ExplainRequest {
    ExplainRequest {
        method: "GET".into(),
        path: "/fhir/Patient".into(),
        token: token.into(),
        ..Default::default()
    }
}

fn with_operator_token(request: ExplainRequest, token: &str) -> tonic::Request<ExplainRequest> {
    let mut r = tonic::Request::new(request);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_over_the_admin_api_is_for_operators_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        "resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: https://auth.example.com, secret: very-secret}\n---\n\
         resourceType: AccessPolicy\nid: admins-only\nengine: matcho\nmatcho: {jwt: {role: admin}}\n",
    )
    .unwrap();
    let token_file = dir.path().join("operator-token");
    std::fs::write(&token_file, format!("{OPERATOR_TOKEN}\n")).unwrap();
    let admin = support::free_addr();
    let portcullis = Portcullis::builder()
        .config(dir.path().join("c.yaml"))
        .arg("--admin-addr")
        .arg(admin.to_string())
        .arg("--admin-token-file")
        .arg(&token_file)
        .start()
        .await;

    let mut client = support::eventually("the admin API to listen", || async {
        AdminClient::connect(format!("http://{admin}")).await.ok()
    })
    .await;
    let viewer = Jwt::new("https://auth.example.com", "bob")
        .claim("role", "viewer")
        .sign_hs256("very-secret");
    let before = portcullis.metrics().await;

    let anonymous = client.explain(explain(&viewer)).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let wrong = client
        .explain(with_operator_token(
            explain(&viewer),
            "not-the-operator-token",
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);

    let answer = client
        .explain(with_operator_token(explain(&viewer), OPERATOR_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.allowed);
    assert_eq!(
        (answer.status, answer.reason.as_str()),
        (403, "no_policy_allows")
    );
    let trace: serde_json::Value = serde_json::from_str(&answer.trace_json).unwrap();
    let mismatch = &trace["policies"][0]["explanation"]["errors"][0];
    assert_eq!(mismatch["path"], "jwt.role");
    assert_eq!(mismatch["but"], "viewer");
    assert!(
        !answer.trace_json.contains(&viewer),
        "the token never appears in a trace"
    );

    // docs/observability.md, "Explanations": one explanation counted (the two refused
    // callers got none), and no request series moved: not a decision, not a check's time,
    // not a token cache event.
    let after = portcullis.metrics().await;
    let explains = "portcullis_explains_total";
    assert_eq!(
        after.counter(explains, &[]) - before.counter(explains, &[]),
        1,
        "{}",
        after.text()
    );
    assert_eq!(after.all_decisions(), before.all_decisions());
    assert_eq!(after.checks(), before.checks());
    for event in [
        "verified_cache_hit",
        "verified_cache_miss",
        "refused_cache_hit",
    ] {
        assert_eq!(
            after
                .find("portcullis_token_events_total", &[("event", event)])
                .unwrap_or(0.0),
            before
                .find("portcullis_token_events_total", &[("event", event)])
                .unwrap_or(0.0),
            "{event} moved:\n{}",
            after.text()
        );
    }
}

#[test]
fn the_admin_api_cannot_be_enabled_without_a_token() {
    serve::run_refused(
        &[
            "serve",
            "--config",
            "examples/quickstart",
            "--admin-addr",
            "127.0.0.1:0",
        ],
        "--admin-token-file",
    );
}

/// `namespace` in the explain request decides as for a request of that namespace: the
/// root's resources and its own (docs/tenancy.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_decides_for_the_requests_namespace() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        "apiVersion: portcullis.dev/v1alpha1\nkind: TokenIntrospector\n\
         metadata: {name: t, namespace: platform}\n\
         spec: {type: jwt, jwt: {iss: https://auth.example.com, secret: very-secret}}\n---\n\
         apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\n\
         metadata: {name: open, namespace: team-a}\nspec: {engine: allow}\n",
    )
    .unwrap();
    let token_file = dir.path().join("operator-token");
    std::fs::write(&token_file, OPERATOR_TOKEN).unwrap();
    let admin = support::free_addr();
    let _portcullis = Portcullis::builder()
        .config(dir.path().join("c.yaml"))
        .arg("--root-namespace")
        .arg("platform")
        .arg("--admin-addr")
        .arg(admin.to_string())
        .arg("--admin-token-file")
        .arg(&token_file)
        .start()
        .await;
    let client = support::eventually("the admin API to listen", || async {
        AdminClient::connect(format!("http://{admin}")).await.ok()
    })
    .await;
    let token = Jwt::new("https://auth.example.com", "ann").sign_hs256("very-secret");
    let decide = |namespace: &str| {
        let request = ExplainRequest {
            namespace: namespace.into(),
            ..explain(&token)
        };
        let mut client = client.clone();
        async move {
            client
                .explain(with_operator_token(request, OPERATOR_TOKEN))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let team_a = decide("team-a").await;
    assert!(team_a.allowed, "{team_a:?}");
    assert_eq!(team_a.policy, "team-a/open");
    for other in ["team-b", ""] {
        let answer = decide(other).await;
        assert_eq!(
            (answer.allowed, answer.status),
            (false, 403),
            "{other}: {answer:?}"
        );
    }
}
