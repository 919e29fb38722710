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
    let _portcullis = Portcullis::builder()
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
