//! A first rollout, against the real binary over gRPC ext_authz: `serve --shadow` answers
//! allow to every request while counting and logging what it would have denied, a dry-run
//! AccessPolicy never allows but says what it would have done, and `--policy-metrics`
//! counts each policy evaluated.

use crate::support;

use support::ext_authz::check;
use support::portcullis::Portcullis;
use support::tokens::Jwt;

const ISS: &str = "https://auth.example.com";
const SECRET: &str = "very-secret";

/// A dry-run policy for writers, first in name order, and an enforced one for readers.
const CONFIG: &str = r#"
resourceType: TokenIntrospector
id: auth
type: jwt
jwt: {iss: https://auth.example.com, secret: very-secret}
---
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: a-writers-v2
  annotations:
    portcullis.dev/dry-run: "true"
spec:
  engine: matcho
  matcho: {request-method: post, jwt: {scope: write}}
---
resourceType: AccessPolicy
id: b-readers
engine: matcho
matcho: {request-method: get, jwt: {iss: https://auth.example.com}}
"#;

const OWN_HEADERS: [&str; 4] = [
    "x-portcullis-user",
    "x-portcullis-subject",
    "x-portcullis-issuer",
    "x-portcullis-policy",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_allows_every_request_and_counts_what_it_would_have_denied() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), CONFIG).unwrap();
    let p = Portcullis::builder()
        .config(dir.path())
        .arg("--shadow")
        .env("PORTCULLIS_POLICY_METRICS", "true")
        .start()
        .await;
    let mut client = p.ext_authz_client().await;

    // Allowed for real: the enforced policy's answer, identity and all.
    let reader = Jwt::new(ISS, "rita").sign_hs256(SECRET);
    let answer = check(&mut client, "GET", "/fhir/Patient", Some(&reader)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("x-portcullis-policy"), Some("b-readers"));
    assert_eq!(answer.header("x-portcullis-subject"), Some("rita"));

    // Denied for real (403, 401 without a token, 401 expired): each answered allow, with
    // no identity of portcullis's.
    let writer = Jwt::new(ISS, "wanda")
        .claim("scope", "write")
        .sign_hs256(SECRET);
    let expired = Jwt::new(ISS, "ed").expired().sign_hs256(SECRET);
    for token in [Some(writer.as_str()), None, Some(expired.as_str())] {
        let answer = check(&mut client, "POST", "/fhir/Patient?x=1", token).await;
        assert!(answer.allowed, "{answer:?}");
        assert_eq!(answer.status, 200, "{answer:?}");
        for h in OWN_HEADERS {
            assert_eq!(
                answer.header(h),
                None,
                "{h} set on a shadow allow: {answer:?}"
            );
        }
    }

    let m = p.metrics().await;
    let decisions = |outcome: &str, reason: &str| {
        m.counter(
            "portcullis_decisions_total",
            &[("outcome", outcome), ("reason", reason)],
        )
    };
    // The real outcomes, as enforcement would have counted them.
    assert_eq!(decisions("allow", "allowed"), 1, "{}", m.text());
    assert_eq!(decisions("deny", "no_policy_allows"), 1);
    assert_eq!(decisions("deny", "no_credentials"), 1);
    assert_eq!(decisions("deny", "token_expired"), 1);
    let shadowed =
        |reason: &str| m.counter("portcullis_shadow_allowed_total", &[("reason", reason)]);
    assert_eq!(shadowed("no_policy_allows"), 1);
    assert_eq!(shadowed("no_credentials"), 1);
    assert_eq!(shadowed("token_expired"), 1);
    m.assert_absent("portcullis_shadow_allowed_total", &[("reason", "allowed")]);
    assert_eq!(m.counter("portcullis_shadow_mode", &[]), 1);

    // Per policy: the dry-run one was evaluated on every request that reached the
    // policies (the expired token did not), and would have allowed the writer.
    let evaluated = |policy: &str, result: &str, dry_run: &str| {
        m.counter(
            "portcullis_policy_evaluations_total",
            &[("policy", policy), ("result", result), ("dry_run", dry_run)],
        )
    };
    assert_eq!(evaluated("a-writers-v2", "allow", "true"), 1);
    assert_eq!(evaluated("a-writers-v2", "deny", "true"), 2);
    assert_eq!(evaluated("b-readers", "allow", "false"), 1);
    assert_eq!(evaluated("b-readers", "deny", "false"), 2);

    let log = support::eventually("the dry-run policy's line in the log", || async {
        let log = p.log();
        log.contains("dry_run_would_allow").then_some(log)
    })
    .await;
    assert!(
        log.contains("shadow mode: every request is allowed"),
        "{log}"
    );
    let lines = |word: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains(word))
            .map(str::to_string)
            .collect()
    };
    let dry_run = lines("dry_run_would_allow");
    assert_eq!(dry_run.len(), 1, "{log}");
    for part in [
        "policy=a-writers-v2",
        "method=POST",
        "path=/fhir/Patient",
        "no_policy_allows",
        "shadow=true",
    ] {
        assert!(dry_run[0].contains(part), "no {part} in {}", dry_run[0]);
    }
    assert!(
        !dry_run[0].contains("x=1"),
        "the query stays out: {}",
        dry_run[0]
    );
    let shadowed: Vec<String> = lines(" decision ")
        .into_iter()
        .filter(|l| l.contains("shadow=true"))
        .collect();
    assert_eq!(shadowed.len(), 3, "{log}");
    for reason in ["no_policy_allows", "no_credentials", "token_expired"] {
        assert!(
            shadowed
                .iter()
                .any(|l| l.contains(reason) && l.contains("outcome=\"deny\"")),
            "no shadowed {reason} in {shadowed:#?}"
        );
    }
    assert!(!log.contains(&writer) && !log.contains(&reader));
}

/// Without the flags: enforcement, no per-policy series, and the gauge at 0. A dry-run
/// policy still never allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_shadow_the_dry_run_policy_still_never_allows() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), CONFIG).unwrap();
    let p = Portcullis::builder().config(dir.path()).start().await;
    let mut client = p.ext_authz_client().await;
    let writer = Jwt::new(ISS, "wanda")
        .claim("scope", "write")
        .sign_hs256(SECRET);
    let answer = check(&mut client, "POST", "/fhir/Patient", Some(&writer)).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.body.contains("no_policy_allows"), "{answer:?}");
    let m = p.metrics().await;
    assert_eq!(m.counter("portcullis_shadow_mode", &[]), 0);
    assert!(
        !m.text().contains("portcullis_policy_evaluations"),
        "{}",
        m.text()
    );
    assert!(
        !m.text().contains("portcullis_shadow_allowed_total{"),
        "{}",
        m.text()
    );
}
