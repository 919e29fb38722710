//! `portcullis test`: policy unit tests, decided offline as `serve` would decide them.
//!
//! A file holds `tests:`, each case a request, its credential (`jwt:` claims that stand
//! validated by the TokenIntrospector of their `iss`, a real `token:`, or neither) and the
//! expected `status` (and `policy`). One line per case, the trace of each failure, and the
//! closing line `N passed, M failed`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{load_or_report, offline_authorizer, offline_request};
use crate::cli::{name_claims, TestArgs};
use crate::decision::{Authorizer, Decision};
use crate::users::UserResolver;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    request: CaseRequest,
    /// Claims of a JWT that its issuer's TokenIntrospector has validated.
    jwt: Option<Map<String, Value>>,
    /// A token, validated for real.
    token: Option<String>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CaseRequest {
    method: String,
    scheme: String,
    /// With the query string.
    path: String,
    headers: BTreeMap<String, String>,
    /// The request's namespace (docs/tenancy.md): the root's resources and this
    /// namespace's apply. Absent: only the root's.
    namespace: Option<String>,
}

impl Default for CaseRequest {
    fn default() -> Self {
        CaseRequest {
            method: "GET".into(),
            scheme: "https".into(),
            path: "/".into(),
            headers: BTreeMap::new(),
            namespace: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: u16,
    /// The AccessPolicy that allows, when the case expects one to.
    policy: Option<String>,
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
}

pub async fn test(args: &TestArgs) -> ExitCode {
    let Some(snapshot) = load_or_report(&args.config) else {
        return ExitCode::FAILURE;
    };
    // `explain` is how cases are decided: it never creates a User nor calls userinfo.
    let users = UserResolver::off().with_name_claims(name_claims(args.claim_users_by_name));
    let authorizer = match offline_authorizer(snapshot, users, &args.trust) {
        Ok(authorizer) => authorizer,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut tally = Tally::default();
    for file in &args.files {
        run_file(&authorizer, file, &mut tally).await;
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run_file(authorizer: &Authorizer, file: &Path, tally: &mut Tally) {
    let cases = match read(file) {
        Ok(cases) => cases,
        Err(e) => {
            // A file that cannot be read counts as one failure: it tested nothing.
            println!("FAIL {}: {e}", file.display());
            tally.failed += 1;
            return;
        }
    };
    for (i, case) in cases.into_iter().enumerate() {
        let name = if case.name.is_empty() {
            format!("{}: tests[{i}]", file.display())
        } else {
            case.name.clone()
        };
        match decide(authorizer, case).await {
            Ok(()) => {
                println!("PASS {name}");
                tally.passed += 1;
            }
            Err(why) => {
                println!("FAIL {name}: {why}");
                tally.failed += 1;
            }
        }
    }
}

/// The cases of a file, or what is wrong with it (file, case and field named).
fn read(file: &Path) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?;
    // serde_yaml's message names the case and field (`tests[0].expect: ...`) and the line.
    let parsed: TestFile = serde_yaml::from_str(&text).map_err(|e| e.to_string())?;
    for (i, case) in parsed.tests.iter().enumerate() {
        let at = |what: &str| format!("tests[{i}] ({}): {what}", case.name);
        if case.jwt.is_some() && case.token.is_some() {
            return Err(at("give `jwt` (claims) or `token`, not both"));
        }
        if ![200, 401, 403, 503].contains(&case.expect.status) {
            return Err(at("expect.status is one of 200, 401, 403, 503"));
        }
        if case.expect.policy.is_some() && case.expect.status != 200 {
            return Err(at("expect.policy names the policy that allows: status 200"));
        }
        if let Some(ns) = &case.request.namespace {
            if !crate::resources::is_namespace_name(ns) {
                return Err(at(
                    "request.namespace is a namespace name (lower-case letters, digits and `-`)",
                ));
            }
        }
    }
    Ok(parsed.tests)
}

/// `Ok` when the decision is the expected one; otherwise what differs, and the trace.
async fn decide(authorizer: &Authorizer, case: Case) -> Result<(), String> {
    let headers = case
        .request
        .headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    // With `jwt:` claims, policies see what a real token shows: one, redacted.
    let bearer = case
        .token
        .as_deref()
        .or(case.jwt.as_ref().map(|_| "claims"));
    let mut request = offline_request(
        &case.request.method,
        &case.request.scheme,
        &case.request.path,
        headers,
        bearer,
    );
    request.namespace = case.request.namespace;
    let (decision, trace) = match case.jwt {
        Some(claims) => authorizer.explain_claims(&request, claims).await,
        None => authorizer.explain(&request).await,
    };
    let expected = &case.expect;
    let policy_fits = expected.policy.is_none() || expected.policy == decision.policy;
    if decision.http_status() == expected.status && policy_fits {
        return Ok(());
    }
    let trace = trace.to_tree();
    Err(format!(
        "expected {}, got {}\n{}",
        describe(expected.status, expected.policy.as_deref(), None),
        describe(
            decision.http_status(),
            decision.policy.as_deref(),
            Some(&decision)
        ),
        indent(&trace)
    ))
}

fn describe(status: u16, policy: Option<&str>, decision: Option<&Decision>) -> String {
    let mut text = status.to_string();
    if let Some(d) = decision.filter(|d| !d.allowed()) {
        text.push_str(&format!(" ({})", d.reason));
    }
    if let Some(p) = policy {
        text.push_str(&format!(" by AccessPolicy/{p}"));
    }
    text
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
