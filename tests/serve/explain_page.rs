//! The explain page on the admin listener: an operator pastes a token and a request and
//! sees the decision and its trace as a tree. Driven in a real headless Chromium, and over
//! plain HTTP for what a browser does not show (statuses, headers, the JSON answer).
//!
//! The browser test needs Debian's `chromium` and `chromium-driver`
//! (`scripts/install-test-deps.sh`); it fails, never skips, without them.

use crate::support;

use std::path::PathBuf;
use std::time::Instant;

use portcullis::proto::admin::admin_client::AdminClient;
use portcullis::proto::admin::ExplainRequest;
use serde_json::{json, Value};
use support::browser::{self, Browser};
use support::portcullis::Portcullis;
use support::tokens::Jwt;

const OPERATOR_TOKEN: &str = "operator-token-0123456789abcdef";

const CONFIG: &str = "\
resourceType: TokenIntrospector
id: t
type: jwt
jwt: {iss: https://auth.example.com, secret: very-secret}
---
resourceType: AccessPolicy
id: admins
engine: matcho
matcho: {jwt: {role: admin}}
---
resourceType: AccessPolicy
id: api-key
engine: matcho
matcho: {headers: {x-api-key: the-expected-key}}
---
resourceType: AccessPolicy
id: readers
engine: matcho
matcho: {request-method: get, uri: '#^/fhir/'}
";

/// portcullis with the admin listener on, and the address of that listener.
struct Admin {
    _dir: tempfile::TempDir,
    portcullis: Portcullis,
    addr: std::net::SocketAddr,
}

impl Admin {
    async fn start() -> Admin {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.yaml"), CONFIG).unwrap();
        let token_file = dir.path().join("operator-token");
        std::fs::write(&token_file, format!("{OPERATOR_TOKEN}\n")).unwrap();
        let addr = support::free_addr();
        let portcullis = Portcullis::builder()
            .config(dir.path().join("c.yaml"))
            .arg("--admin-addr")
            .arg(addr.to_string())
            .arg("--admin-token-file")
            .arg(&token_file)
            .start()
            .await;
        let admin = Admin {
            _dir: dir,
            portcullis,
            addr,
        };
        let url = admin.url("/");
        support::eventually("the admin listener to serve the page", || async {
            let r = support::http_client().get(&url).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        admin
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn viewer_token() -> String {
    Jwt::new("https://auth.example.com", "bob")
        .claim("role", "viewer")
        .sign_hs256("very-secret")
}

fn screenshot_path() -> PathBuf {
    browser::artifacts_dir().join("explain-page.png")
}

/// The mismatches listed under one policy of the rendered tree, as
/// `(path, expected, found)`.
async fn mismatches(browser: &Browser, policy: &str) -> Vec<(String, String, String)> {
    let rows = browser
        .eval(&format!(
            "return Array.from(document.querySelectorAll(\
               '#trace li.policy[data-name=\"AccessPolicy/{policy}\"] > ul > li.mismatch'))\
             .map(li => [li.querySelector('.path').textContent,\
                         li.querySelector('.expected').textContent,\
                         li.querySelector('.found').textContent]);"
        ))
        .await;
    serde_json::from_value(rows).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_fills_the_explain_page_and_reads_the_decision_and_the_failed_path() {
    let admin = Admin::start().await;
    let token = viewer_token();
    let started = Instant::now();
    let browser = Browser::start().await;

    browser
        .open(&admin.url("/"), "html[data-ready='true']")
        .await;
    assert_eq!(
        browser.client().title().await.unwrap(),
        "portcullis: explain a decision"
    );

    // A viewer's POST: no policy allows it, and the tree says where each one failed.
    browser.fill("#operator-token", OPERATOR_TOKEN).await;
    browser.fill("#token", &token).await;
    browser.fill("#method", "POST").await;
    browser.fill("#path", "/fhir/Patient?_count=1").await;
    browser
        .fill("#headers", &format!("x-tenant: acme\nx-api-key: {token}"))
        .await;
    browser.click("#submit").await;
    browser.wait_for("#result[data-answers='1']").await;

    let decision = browser.text("#decision").await;
    assert!(
        decision.starts_with("DENY 403 (no_policy_allows)"),
        "decision line: {decision:?}"
    );
    let shown = browser.find("#decision").await;
    assert_eq!(
        shown.attr("data-status").await.unwrap().as_deref(),
        Some("403")
    );
    assert_eq!(
        shown.attr("data-allowed").await.unwrap().as_deref(),
        Some("false")
    );

    assert_eq!(
        mismatches(&browser, "admins").await,
        [("jwt.role".into(), "\"admin\"".into(), "\"viewer\"".into())]
    );
    assert_eq!(
        mismatches(&browser, "readers").await,
        [("request-method".into(), "\"get\"".into(), "\"post\"".into())]
    );
    // The token, pasted as a header too, reaches a policy's found value: shown redacted.
    assert_eq!(
        mismatches(&browser, "api-key").await,
        [(
            "headers.x-api-key".into(),
            "\"the-expected-key\"".into(),
            "\"[redacted]\"".into()
        )]
    );
    let tree = browser.text("#trace").await;
    assert!(
        tree.contains("Token valid jwt by TokenIntrospector/t"),
        "{tree}"
    );
    assert!(
        tree.contains("AccessPolicy/admins: denies (matcho)"),
        "{tree}"
    );
    assert!(
        tree.contains("jwt.role: expected \"admin\", found \"viewer\""),
        "{tree}"
    );

    // Neither token is anywhere in the document but in its own field's value (which the
    // markup does not hold).
    let document = browser.client().source().await.unwrap();
    let text = browser.eval("return document.body.innerText;").await;
    for (name, secret) in [
        ("token", token.as_str()),
        ("operator token", OPERATOR_TOKEN),
    ] {
        assert!(
            !document.contains(secret),
            "the {name} is in the page's markup"
        );
        assert!(
            !text.as_str().unwrap().contains(secret),
            "the {name} is in the page's text"
        );
    }
    assert_eq!(
        browser
            .eval("return document.getElementById('token').value;")
            .await,
        json!(token),
        "the token stays in its field, for the next try"
    );
    let path = screenshot_path();
    browser.screenshot(&path).await;

    // The same viewer's GET: allowed by `readers`, the page updated in place.
    browser.fill("#method", "GET").await;
    browser.click("#submit").await;
    browser.wait_for("#result[data-answers='2']").await;
    let decision = browser.text("#decision").await;
    assert!(
        decision.starts_with("ALLOW 200 (allowed) by AccessPolicy/readers"),
        "decision line: {decision:?}"
    );
    let readers = browser
        .find("#trace li.policy[data-name='AccessPolicy/readers']")
        .await;
    assert_eq!(
        readers.attr("class").await.unwrap().as_deref(),
        Some("policy allow")
    );

    // A wrong operator token: refused, said so, and no trace shown.
    browser
        .fill("#operator-token", "not-the-operator-token")
        .await;
    browser.click("#submit").await;
    let error = browser.wait_for("#error:not([hidden])").await;
    let error = error.text().await.unwrap();
    assert!(
        error.contains("The operator token was refused (HTTP 403"),
        "{error}"
    );
    assert!(browser.find_all("#result:not([hidden])").await.is_empty());

    browser.close().await;
    eprintln!(
        "browser test took {:?}; screenshot at {}",
        started.elapsed(),
        path.display()
    );
    let png = std::fs::read(&path).unwrap();
    assert!(png.len() > 10_000, "a screenshot of a drawn page");
    drop(admin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_explain_answers_only_the_operator_and_never_shows_the_token() {
    let admin = Admin::start().await;
    let client = support::http_client();
    let token = viewer_token();
    let body = json!({
        "token": token,
        "method": "POST",
        "path": "/fhir/Patient",
        "headers": {"x-api-key": token, "x-tenant": "acme"},
    });
    let post = |operator: Option<&str>| {
        let mut request = client.post(admin.url("/explain")).json(&body);
        if let Some(operator) = operator {
            request = request.bearer_auth(operator);
        }
        request.send()
    };

    let anonymous = post(None).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Bearer realm=\"portcullis-admin\""
    );
    let anonymous: Value = anonymous.json().await.unwrap();
    assert_eq!(anonymous["error"], "unauthorized");

    let wrong = post(Some("not-the-operator-token")).await.unwrap();
    assert_eq!(wrong.status(), 403);
    assert!(!wrong.text().await.unwrap().contains(&token));

    let answer = post(Some(OPERATOR_TOKEN)).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["cache-control"], "no-store");
    assert!(answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let text = answer.text().await.unwrap();
    assert!(!text.contains(&token), "the token is never in an answer");
    assert!(!text.contains(OPERATOR_TOKEN));
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["decision"],
        json!({
            "allowed": false,
            "status": 403,
            "reason": "no_policy_allows",
            "message": answer["decision"]["message"],
            "policy": null,
        })
    );
    let policies = answer["trace"]["policies"].as_array().unwrap();
    let names: Vec<&str> = policies
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admins", "api-key", "readers"], "in name order");
    assert_eq!(
        policies[0]["explanation"]["errors"][0],
        json!({"path": "jwt.role", "expected": "admin", "but": "viewer"})
    );
    assert_eq!(
        policies[1]["explanation"]["errors"][0]["but"], "[redacted]",
        "the token pasted into another header is not shown back"
    );
    assert_eq!(answer["trace"]["token"]["claims"]["role"], "viewer");
    let tree = answer["tree"].as_str().unwrap();
    assert!(
        tree.contains(
            "  admins: denies (matcho)\n    jwt.role: expected \"admin\", found \"viewer\"\n"
        ),
        "{tree}"
    );
    assert!(
        tree.contains("decision: DENY 403 (no_policy_allows)"),
        "{tree}"
    );

    // What is not a request to explain is refused without echoing it.
    let not_json = client
        .post(admin.url("/explain"))
        .bearer_auth(OPERATOR_TOKEN)
        .body(token.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);
    let bad = client
        .post(admin.url("/explain"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"token": 1, "headers": {"authorization": [token]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad = bad.text().await.unwrap();
    assert!(!bad.contains(&token), "{bad}");
    assert!(
        bad.contains("`token`"),
        "names where the body is wrong: {bad}"
    );

    // The gRPC operator API shares the port.
    let mut grpc = AdminClient::connect(admin.url("")).await.unwrap();
    let mut request = tonic::Request::new(ExplainRequest {
        method: "GET".into(),
        path: "/fhir/Patient".into(),
        token: token.clone(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {OPERATOR_TOKEN}").parse().unwrap(),
    );
    let grpc_answer = grpc.explain(request).await.unwrap().into_inner();
    assert!(grpc_answer.allowed);
    assert_eq!(grpc_answer.policy, "readers");
    drop(admin.portcullis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_public_self_contained_and_locked_to_its_origin() {
    let admin = Admin::start().await;
    let client = support::http_client();

    for (path, content_type) in [
        ("/", "text/html"),
        ("/explain", "text/html"),
        ("/explain.js", "text/javascript"),
        ("/explain.css", "text/css"),
    ] {
        let r = client.get(admin.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path} needs no operator token");
        let headers = r.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "GET {path}: {:?}",
            headers["content-type"]
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        for directive in [
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp} lacks {directive}");
        }
        assert!(!csp.contains("unsafe-"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");

        let text = r.text().await.unwrap();
        let lower = text.to_ascii_lowercase();
        for external in [
            "http://",
            "https://",
            "src=\"//",
            "href=\"//",
            "url(",
            "@import",
        ] {
            assert!(!lower.contains(external), "GET {path} holds {external:?}");
        }
        if content_type == "text/html" {
            // Every reference in the markup is to this listener.
            let references: Vec<&str> = text
                .split(['"', '\''])
                .zip(text.split(['"', '\'']).skip(1))
                .filter(|(before, _)| before.ends_with("src=") || before.ends_with("href="))
                .map(|(_, value)| value)
                .collect();
            assert_eq!(references, ["explain.css", "explain.js"], "GET {path}");
            assert!(!text.contains("<script>"), "no inline script");
        }
    }

    let missing = client.get(admin.url("/nowhere")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let get_is_not_post = client
        .put(admin.url("/explain"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(get_is_not_post.status(), 405);
    drop(admin.portcullis);
}
