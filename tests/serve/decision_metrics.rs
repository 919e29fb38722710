//! `/metrics` after known traffic: every decision is counted once, under its outcome and
//! reason, and timed once.

use crate::support;

use std::collections::BTreeMap;

use jsonwebtoken::Algorithm;
use support::ext_authz::check;
use support::portcullis::Portcullis;
use support::tokens::Jwt;

/// The quickstart: TokenIntrospector `external-auth-server` (HS256) and a policy that
/// allows its issuer.
const QUICKSTART: &str = "examples/quickstart";
const ISS: &str = "https://auth.example.com";
const SECRET: &str = "very-secret";
/// Trusted, but no policy allows its tokens: 403.
const OTHER_ISS: &str = "https://other.example.com";
const OTHER_SECRET: &str = "other-secret";
/// Trusted through a JWKS nobody serves: its tokens cannot be checked, 503.
const DOWN_ISS: &str = "https://down.example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_counted_by_outcome_and_reason_and_timed() {
    let extra = tempfile::tempdir().unwrap();
    let closed = support::free_addr();
    std::fs::write(
        extra.path().join("introspectors.yaml"),
        format!(
            "resourceType: TokenIntrospector\nid: other-issuer\ntype: jwt\n\
             jwt: {{iss: {OTHER_ISS}, secret: {OTHER_SECRET}}}\n---\n\
             resourceType: TokenIntrospector\nid: down\ntype: jwt\njwt: {{iss: {DOWN_ISS}}}\n\
             jwks_uri: http://{closed}/jwks\n"
        ),
    )
    .unwrap();
    let p = Portcullis::builder()
        .config(QUICKSTART)
        .config(extra.path())
        .start()
        .await;
    let mut client = p.ext_authz_client().await;
    let before = p.metrics().await;

    // (token, the status it must get), each token distinct.
    let mut traffic: Vec<(Option<String>, u16)> = Vec::new();
    const ALLOWED: usize = 5;
    for i in 0..ALLOWED {
        let token = Jwt::new(ISS, "basic").claim("n", i).sign_hs256(SECRET);
        traffic.push((Some(token), 200));
    }
    for i in 0..2 {
        let token = Jwt::new(ISS, "basic")
            .claim("n", i)
            .expired()
            .sign_hs256(SECRET);
        traffic.push((Some(token), 401));
    }
    traffic.push((None, 401));
    for i in 0..2 {
        let token = Jwt::new(OTHER_ISS, "basic")
            .claim("n", i)
            .sign_hs256(OTHER_SECRET);
        traffic.push((Some(token), 403));
    }
    for i in 0..3 {
        let token = Jwt::new(DOWN_ISS, "basic")
            .claim("n", i)
            .kid("rsa-a")
            .sign_with("rsa-a", Algorithm::RS256);
        traffic.push((Some(token), 503));
    }
    for (token, status) in &traffic {
        let answer = check(&mut client, "GET", "/fhir/Patient", token.as_deref()).await;
        assert_eq!(answer.status, *status, "{answer:?}");
    }

    let after = p.metrics().await;
    let expected: BTreeMap<(String, String), u64> = [
        ("allow", "allowed", ALLOWED as u64),
        ("deny", "token_expired", 2),
        ("deny", "no_credentials", 1),
        ("deny", "no_policy_allows", 2),
        ("deny", "introspection_unavailable", 3),
    ]
    .into_iter()
    .map(|(o, r, n)| ((o.to_string(), r.to_string()), n))
    .collect();
    let (was, is) = (before.all_decisions(), after.all_decisions());
    let moved: BTreeMap<(String, String), u64> = is
        .iter()
        .map(|(k, n)| (k.clone(), n - was.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(
        moved,
        expected,
        "decision counters moved by\n{}",
        after.text()
    );
    assert_eq!(
        after.checks() - before.checks(),
        traffic.len() as u64,
        "one timing per decision"
    );
    // The token cache and the identity-provider calls moved too: each distinct JWT was
    // verified once (a miss), and the unreachable JWKS was asked for.
    let moved = |event: &str| {
        after.token_event(event)
            - before
                .find(TOKEN_EVENTS, &[("event", event)])
                .unwrap_or(0.0) as u64
    };
    assert_eq!(moved("verified_cache_miss"), (ALLOWED + 2 + 2 + 3) as u64);
    assert!(moved("jwks_fetch_error") >= 1, "{}", after.text());
    assert!(after.value("portcullis_config_last_load_timestamp_seconds", &[]) > 1.7e9);
}

const TOKEN_EVENTS: &str = "portcullis_token_events_total";

/// The reason words the code gives a decision, read from its source: each arm of
/// `TokenError::reason`, and the reason of each `Verdict::new` and
/// `Decision::unavailable` in the pipeline. Checked to find the ones known, so that a scan
/// that stopped matching fails rather than finding nothing.
fn reasons_in_code() -> std::collections::BTreeSet<String> {
    let read = |path: &str| std::fs::read_to_string(support::repo_path(path)).unwrap();
    let word = regex::Regex::new(r#""([a-z][a-z_]*)""#).unwrap();
    let mut reasons = std::collections::BTreeSet::new();

    let token = read("src/token/mod.rs");
    let body = token
        .split("pub fn reason(&self) -> &'static str {")
        .nth(1)
        .expect("TokenError::reason in src/token/mod.rs");
    let body = body.split("\n    }\n").next().unwrap();
    reasons.extend(word.captures_iter(body).map(|c| c[1].to_string()));

    // The first string literal after each constructor is its reason (the outcome before
    // it is an enum, the flag a call).
    let constructor =
        regex::Regex::new(r#"(?:Verdict::new|Decision::unavailable)\([^"]*"([a-z][a-z_]*)""#)
            .unwrap();
    let mut dir: Vec<_> = std::fs::read_dir(support::repo_path("src/decision"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .filter(|p| !p.ends_with("tests.rs"))
        .collect();
    dir.sort();
    for file in dir {
        let text = std::fs::read_to_string(&file).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        reasons.extend(constructor.captures_iter(text).map(|c| c[1].to_string()));
    }
    for known in [
        "allowed",
        "no_policy_allows",
        "no_credentials",
        "user_inactive",
        "not_ready",
        "deadline_exceeded",
        "internal_error",
        "token_expired",
        "token_inactive",
        "introspection_unavailable",
    ] {
        assert!(
            reasons.contains(known),
            "the scan of the code no longer finds {known}: {reasons:?}"
        );
    }
    reasons
}

/// Metric names as `/metrics` exposes them, from its `# TYPE` lines (a family is listed
/// there even before its first sample): `(the name as documented, the series names)`.
fn exported(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            let (documented, series) = match kind {
                "counter" => (format!("{name}_total"), vec![format!("{name}_total")]),
                "histogram" => (
                    name.to_string(),
                    ["_bucket", "_sum", "_count"]
                        .iter()
                        .map(|s| format!("{name}{s}"))
                        .collect(),
                ),
                _ => (name.to_string(), vec![name.to_string()]),
            };
            (documented, series)
        })
        .collect()
}

#[test]
fn the_metrics_table_and_the_dashboard_name_only_exported_metrics() {
    // A labelled family is exposed only once it has a series: give each one.
    let metrics = portcullis::metrics::Metrics::new().with_policy_metrics();
    metrics.observe_decision(true, "allowed", std::time::Duration::from_micros(5));
    metrics.shadow_allowed("no_policy_allows");
    let policies = metrics.policy_evaluations().expect("--policy-metrics");
    policies.count("team-a/p", "allow", false);
    metrics.config_loaded(true, 1, 0);
    metrics.token_event("verified_cache_hit");
    metrics.user_event("created");
    metrics.status_write("ok");
    metrics.watch_error("AccessPolicy");
    metrics.costly_policies("pool", 1);
    let exported = exported(&metrics.encode());

    // docs/observability.md: one table row per metric, and no metric without one.
    let doc = std::fs::read_to_string(support::repo_path("docs/observability.md")).unwrap();
    let documented: std::collections::BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_string()))
        .filter(|name| name.starts_with("portcullis_"))
        .collect();
    let names: std::collections::BTreeSet<String> = exported.keys().cloned().collect();
    assert_eq!(
        documented, names,
        "docs/observability.md's table vs /metrics"
    );

    // Its "Reasons" table: every reason word the code gives, and no other.
    let section = doc
        .split("\n### Reasons\n")
        .nth(1)
        .expect("docs/observability.md has a section \"Reasons\"");
    let section = section.split("\n#").next().unwrap();
    let documented: std::collections::BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(word, _)| word.to_string()))
        .collect();
    assert_eq!(
        documented,
        reasons_in_code(),
        "docs/observability.md's reasons vs the code's"
    );

    // Series present at 0 before anything is counted: the page names exactly these.
    let fresh = portcullis::metrics::Metrics::new().encode();
    let at_start: Vec<&str> = fresh
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('{') && !l.contains("le=\""))
        .map(|l| l.rsplit_once(' ').unwrap().0)
        .collect();
    assert!(!at_start.is_empty(), "{fresh}");
    for series in at_start {
        assert!(
            doc.contains(&format!("`{series}`")),
            "{series} is present from start-up: docs/observability.md must say so"
        );
    }

    // The chart's Grafana dashboard queries only series that exist.
    let series: std::collections::BTreeSet<&str> =
        exported.values().flatten().map(String::as_str).collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(support::repo_path(
            "charts/portcullis/dashboards/portcullis.json",
        ))
        .unwrap(),
    )
    .expect("the dashboard is JSON");
    let metric = regex::Regex::new(r"portcullis_[a-z_]+").unwrap();
    let mut used = std::collections::BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            for m in metric.find_iter(expr) {
                assert!(
                    series.contains(m.as_str()),
                    "panel {}: {} is not exported",
                    panel["title"],
                    m.as_str()
                );
                used.insert(m.as_str().to_string());
            }
        }
    }
    for wanted in [
        "portcullis_decisions_total",
        "portcullis_check_duration_seconds_bucket",
        "portcullis_token_events_total",
        "portcullis_user_events_total",
        "portcullis_config_reloads_total",
        "portcullis_config_last_load_timestamp_seconds",
        "portcullis_status_writes_total",
    ] {
        assert!(used.contains(wanted), "no panel shows {wanted}");
    }
}

/// With `--otlp-endpoint`, each decision is one span at the collector, inside the trace of
/// the request that Envoy checks (`traceparent`), carrying the outcome; the query string
/// and the token are not in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_span_reaches_the_otlp_collector_in_the_callers_trace() {
    use support::otlp::{attribute, Collector};
    let (collector, endpoint) = Collector::start().await;
    let p = Portcullis::builder()
        .config(QUICKSTART)
        .arg("--otlp-endpoint")
        .arg(&endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .start()
        .await;
    let mut client = p.ext_authz_client().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let token = Jwt::new(ISS, "basic").sign_hs256(SECRET);
    let bearer = format!("Bearer {token}");
    let answer = support::ext_authz::send(
        &mut client,
        support::ext_authz::check_request(
            "GET",
            "/fhir/Patient?secret-query=1",
            &[("authorization", &bearer), ("traceparent", &traceparent)],
            false,
        ),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        check(&mut client, "GET", "/fhir/Patient", None)
            .await
            .status,
        401
    );

    let spans = support::eventually("two decision spans at the collector", || async {
        let spans = collector.spans();
        (spans.len() >= 2).then_some(spans)
    })
    .await;
    assert_eq!(spans.len(), 2, "one span per decision");
    let (service, allowed) = spans
        .iter()
        .find(|(_, s)| attribute(s, "portcullis.outcome").as_deref() == Some("allow"))
        .expect("the allowed decision's span");
    assert_eq!(service, "portcullis");
    assert_eq!(allowed.name, "ext_authz check");
    assert_eq!(hex(&allowed.trace_id), trace_id, "the caller's trace");
    assert_eq!(hex(&allowed.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(
        attribute(allowed, "portcullis.reason").as_deref(),
        Some("allowed")
    );
    assert_eq!(
        attribute(allowed, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(allowed, "url.path").as_deref(),
        Some("/fhir/Patient")
    );
    let (_, denied) = spans
        .iter()
        .find(|(_, s)| attribute(s, "portcullis.outcome").as_deref() == Some("deny"))
        .expect("the denied decision's span");
    assert_eq!(
        attribute(denied, "portcullis.reason").as_deref(),
        Some("no_credentials")
    );
    assert_ne!(
        hex(&denied.trace_id),
        trace_id,
        "no traceparent: a trace of its own"
    );
    let everything = format!("{spans:?}");
    assert!(!everything.contains(&token) && !everything.contains("secret-query"));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
