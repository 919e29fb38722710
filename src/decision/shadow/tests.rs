//! Dry-run policies, `serve --shadow` and `--policy-metrics` on plain data: configuration
//! text in, decisions, traces, counters and log lines out.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::super::tests::{authorizer, check, request, token};
use crate::decision::{Authorizer, Outcome, IDENTITY_HEADERS};
use crate::metrics::Metrics;

/// Candidates in name order: a dry-run allow-all, the one policy enforced that can allow,
/// a dry-run policy in Istio's annotation, and a policy that allows only `delete`.
const CONFIG: &str = r#"
resourceType: TokenIntrospector
id: auth
type: jwt
jwt: {iss: https://auth.example.com, secret: very-secret}
claimToHeaders: [{header: x-tenant, claim: tenant}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: a-audit-everything
  annotations: {portcullis.dev/dry-run: "true"}
spec: {engine: allow}
---
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: b-readers
  annotations: {portcullis.dev/dry-run: "false"}
spec:
  engine: matcho
  matcho: {jwt: {scope: read}}
---
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: c-writers
  annotations: {istio.io/dry-run: "true"}
spec:
  engine: matcho
  matcho: {jwt: {scope: write}}
---
resourceType: AccessPolicy
id: d-deleters
engine: matcho
matcho: {request-method: delete}
"#;

fn with_metrics(mut a: Authorizer, metrics: Metrics) -> Authorizer {
    a.metrics = Arc::new(metrics);
    a
}

fn shadowing(config: &str) -> Authorizer {
    Authorizer {
        shadow: true,
        ..authorizer(config)
    }
}

/// The value of one series of the OpenMetrics text, `name{labels}` as written there.
fn series(a: &Authorizer, series: &str) -> Option<u64> {
    let text = a.metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn evaluations(a: &Authorizer, policy: &str, result: &str, dry_run: bool) -> Option<u64> {
    series(
        a,
        &format!(
            "portcullis_policy_evaluations_total{{policy=\"{policy}\",result=\"{result}\",dry_run=\"{dry_run}\"}}"
        ),
    )
}

/// The lines logged while `f` runs on this thread.
async fn logged<T>(f: impl std::future::Future<Output = T>) -> (T, String) {
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let out = {
        let _guard = tracing::subscriber::set_default(subscriber);
        // Other tests' subscribers come and go on other threads: the callsites' cached
        // interest is rebuilt with this one in place.
        tracing::callsite::rebuild_interest_cache();
        f.await
    };
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

#[tokio::test]
async fn a_dry_run_policy_that_would_allow_never_allows() {
    let a = authorizer(CONFIG);
    // Only the dry-run policies would allow a writer: a denial.
    let writer = token(json!({"sub": "ann", "scope": "write"}));
    let d = check(&a, "GET", "/fhir/Patient", Some(&writer)).await;
    assert_eq!((d.http_status(), d.reason), (403, "no_policy_allows"));
    assert_eq!(d.policy, None);
    assert_eq!(d.dry_run_allows, ["a-audit-everything", "c-writers"]);
    // Anonymous: the dry-run allow-all would have allowed it too.
    let d = check(&a, "GET", "/fhir/Patient", None).await;
    assert_eq!((d.http_status(), d.reason), (401, "no_credentials"));
    assert_eq!(d.dry_run_allows, ["a-audit-everything"]);
    // A reader is allowed by the policy that is enforced; the dry-run one before it
    // changes nothing.
    let reader = token(json!({"sub": "bob", "scope": "read"}));
    let d = check(&a, "GET", "/fhir/Patient", Some(&reader)).await;
    assert_eq!(
        (d.outcome, d.policy.as_deref()),
        (Outcome::Allow, Some("b-readers"))
    );
    assert!(!d.shadow);
}

#[tokio::test]
async fn explain_shows_a_dry_run_policy_and_what_it_would_have_done() {
    let a = authorizer(CONFIG);
    let writer = token(json!({"sub": "ann", "scope": "write"}));
    let (d, trace) = a
        .explain(&request("GET", "/fhir/Patient", Some(&writer)))
        .await;
    assert_eq!(d.http_status(), 403);
    let json = serde_json::to_value(&trace).unwrap();
    let policies = json["policies"].as_array().unwrap();
    assert_eq!(policies[0]["policy"], "a-audit-everything");
    assert_eq!(policies[0]["allowed"], false);
    assert_eq!(policies[0]["dry_run"], json!({"would_allow": true}));
    assert_eq!(policies[0]["explanation"]["allowed"], true);
    assert_eq!(policies[1]["dry_run"], json!(null), "enforced: no dry_run");
    assert_eq!(policies[3]["policy"], "d-deleters");
    let tree = trace.to_tree();
    for line in [
        "  a-audit-everything: denies (allow) (dry-run: would allow)",
        "  b-readers: denies (matcho)",
        "  c-writers: denies (matcho) (dry-run: would allow)",
        "decision: DENY 403 (no_policy_allows): no AccessPolicy allows this request",
    ] {
        assert!(tree.lines().any(|l| l == line), "no {line:?} in\n{tree}");
    }
    // Would a dry-run policy deny, the tree says so too.
    let reader = token(json!({"sub": "bob", "scope": "read"}));
    let (_, trace) = a
        .explain(&request("GET", "/fhir/Patient", Some(&reader)))
        .await;
    let tree = trace.to_tree();
    let line = "  c-writers: denies (matcho) (dry-run: would deny)";
    assert!(tree.lines().any(|l| l == line), "no {line:?} in\n{tree}");
}

#[tokio::test]
async fn a_denial_that_a_dry_run_policy_would_have_allowed_is_logged() {
    let a = authorizer(CONFIG);
    let writer = token(json!({"sub": "ann", "scope": "write"}));
    let (d, log) = logged(check(&a, "POST", "/fhir/Patient?_q=1", Some(&writer))).await;
    assert_eq!(d.http_status(), 403);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("dry_run_would_allow"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    for (line, policy) in lines.iter().zip(["a-audit-everything", "c-writers"]) {
        assert!(line.contains("portcullis::decision"), "{line}");
        assert!(line.contains(&format!("policy={policy}")), "{line}");
        assert!(line.contains("method=POST"), "{line}");
        assert!(line.contains("path=/fhir/Patient"), "{line}");
        assert!(!line.contains("_q=1"), "no query: {line}");
        assert!(line.contains("no_policy_allows"), "{line}");
        assert!(!line.contains("shadow"), "{line}");
    }
    // Allowed: nothing to say of the dry-run policy.
    let reader = token(json!({"sub": "bob", "scope": "read"}));
    let (d, log) = logged(check(&a, "GET", "/fhir/Patient", Some(&reader))).await;
    assert!(d.allowed());
    assert!(!log.contains("dry_run_would_allow"), "{log}");
}

#[tokio::test]
async fn shadow_answers_allow_to_a_denial_and_counts_and_logs_the_real_one() {
    let a = shadowing(CONFIG);
    let writer = token(json!({"sub": "ann", "scope": "write", "tenant": "acme"}));
    let (d, log) = logged(check(&a, "GET", "/fhir/Patient", Some(&writer))).await;
    assert!(d.allowed() && d.shadow, "{d:?}");
    assert_eq!(d.http_status(), 200);
    assert_eq!(d.reason, "no_policy_allows", "the real reason");
    // The denial set no identity: the allow sets none, and strips every header portcullis
    // owns, the claim headers too.
    assert_eq!(d.upstream_headers().count(), 0, "{d:?}");
    let mut owned: Vec<&str> = IDENTITY_HEADERS.to_vec();
    owned.push("x-tenant");
    assert_eq!(d.headers_to_remove().collect::<Vec<_>>(), owned);
    let line = log
        .lines()
        .find(|l| l.contains(" decision "))
        .unwrap_or_else(|| panic!("no decision line in {log}"));
    assert!(line.contains("shadow=true"), "{line}");
    assert!(line.contains("outcome=\"deny\""), "{line}");
    assert!(line.contains("status=403"), "{line}");
    assert!(line.contains("no_policy_allows"), "{line}");
    assert!(
        log.contains("dry_run_would_allow"),
        "the dry-run policies still speak: {log}"
    );

    let d = check(&a, "GET", "/fhir/Patient", None).await;
    assert!(d.allowed() && d.shadow);
    assert_eq!(d.reason, "no_credentials");

    // An allow is the real one, identity and all.
    let reader = token(json!({"sub": "bob", "scope": "read"}));
    let d = check(&a, "GET", "/fhir/Patient", Some(&reader)).await;
    assert!(d.allowed() && !d.shadow);
    assert_eq!(d.policy.as_deref(), Some("b-readers"));
    assert!(d
        .upstream_headers()
        .any(|(h, v)| (h, v) == ("x-portcullis-subject", "bob")));

    // Counted under the real outcome, and as allowed by the shadow.
    let decisions = |labels: &str| series(&a, &format!("portcullis_decisions_total{{{labels}}}"));
    assert_eq!(
        decisions(r#"outcome="deny",reason="no_policy_allows""#),
        Some(1)
    );
    assert_eq!(
        decisions(r#"outcome="deny",reason="no_credentials""#),
        Some(1)
    );
    assert_eq!(decisions(r#"outcome="allow",reason="allowed""#), Some(1));
    let shadowed = |reason: &str| {
        series(
            &a,
            &format!("portcullis_shadow_allowed_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(shadowed("no_policy_allows"), Some(1));
    assert_eq!(shadowed("no_credentials"), Some(1));
    assert_eq!(shadowed("allowed"), None);
}

#[tokio::test]
async fn shadow_allows_even_what_could_not_be_decided() {
    let a = Authorizer {
        snapshots: Default::default(),
        ..shadowing(CONFIG)
    };
    let d = check(&a, "GET", "/fhir/Patient", None).await;
    assert!(d.allowed() && d.shadow);
    assert_eq!(d.reason, "not_ready");
    assert_eq!(
        d.headers_to_remove().collect::<Vec<_>>(),
        IDENTITY_HEADERS,
        "no configuration: no claim headers known"
    );
    assert_eq!(
        series(
            &a,
            r#"portcullis_decisions_total{outcome="deny",reason="not_ready"}"#
        ),
        Some(1)
    );
}

#[tokio::test]
async fn policy_metrics_count_each_policy_evaluated_by_result() {
    let a = with_metrics(authorizer(CONFIG), Metrics::new().with_policy_metrics());
    let writer = token(json!({"sub": "ann", "scope": "write"}));
    let reader = token(json!({"sub": "bob", "scope": "read"}));
    check(&a, "GET", "/x", Some(&writer)).await;
    check(&a, "GET", "/x", Some(&writer)).await;
    check(&a, "GET", "/x", Some(&reader)).await;
    assert_eq!(
        evaluations(&a, "a-audit-everything", "allow", true),
        Some(3)
    );
    assert_eq!(evaluations(&a, "b-readers", "deny", false), Some(2));
    assert_eq!(evaluations(&a, "b-readers", "allow", false), Some(1));
    assert_eq!(evaluations(&a, "c-writers", "allow", true), Some(2));
    // The reader's request stopped at b-readers: the policies after it were not evaluated.
    assert_eq!(evaluations(&a, "c-writers", "deny", true), None);
    assert_eq!(evaluations(&a, "d-deleters", "deny", false), Some(2));

    // explain evaluates every candidate, and counts none.
    a.explain(&request("GET", "/x", Some(&reader))).await;
    assert_eq!(
        evaluations(&a, "a-audit-everything", "allow", true),
        Some(3)
    );
    assert_eq!(evaluations(&a, "c-writers", "deny", true), None);
    assert_eq!(evaluations(&a, "d-deleters", "deny", false), Some(2));
}

#[tokio::test]
async fn without_policy_metrics_no_policy_is_counted() {
    let a = authorizer(CONFIG);
    check(&a, "GET", "/x", None).await;
    assert!(
        !a.metrics.encode().contains("policy_evaluations"),
        "{}",
        a.metrics.encode()
    );
    assert_eq!(series(&a, "portcullis_shadow_mode"), Some(0));
}
