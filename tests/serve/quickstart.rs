//! The README's "Try it", as a reader follows it: `serve --config examples/quickstart`, the
//! token the README's Python snippet mints, then the two `curl`s against the HTTP flavour.
//! The token finds the quickstart's User, so the allow names it in `x-portcullis-user`.

use crate::support;

use std::process::Command;

use support::ext_authz::http_check;
use support::portcullis::Portcullis;

/// The README's token snippet: the text between `TOKEN=$(python3 - <<'EOF'` and `EOF`.
fn readme_token() -> String {
    let readme = std::fs::read_to_string(support::repo_path("README.md")).unwrap();
    let start = readme
        .find("TOKEN=$(python3 - <<'EOF'\n")
        .expect("the README mints a token with python3");
    let script = &readme[start..].split_once('\n').unwrap().1;
    let script = &script[..script.find("\nEOF\n").expect("the snippet's EOF")];
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python3 (the README's snippet needs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_token_is_allowed_with_the_quickstart_user() {
    let token = readme_token();
    let p = Portcullis::builder()
        .config("examples/quickstart")
        .start()
        .await;
    let allowed = http_check(
        &p,
        "/fhir/Patient",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(allowed.status, 200, "{allowed:#?}");
    assert_eq!(
        allowed.header("x-portcullis-user").as_deref(),
        Some("some-user-id"),
        "{allowed:#?}"
    );
    assert_eq!(
        allowed.header("x-portcullis-policy").as_deref(),
        Some("external-auth-server")
    );
    let anonymous = http_check(&p, "/fhir/Patient", &[]).await;
    assert_eq!(anonymous.status, 401, "{anonymous:#?}");
    assert!(anonymous
        .header("www-authenticate")
        .is_some_and(|c| c.starts_with("Bearer")));
}

/// The admin-listener step is one `serve` with the admin flags, started after the first
/// one stops (both bind :9191 and :8181): the README says to stop the first.
#[test]
fn the_readme_never_starts_a_second_server_beside_the_first() {
    let readme = std::fs::read_to_string(support::repo_path("README.md")).unwrap();
    let try_it = &readme[readme.find("## Try it").unwrap()..readme.find("## Commands").unwrap()];
    let admin = try_it
        .find("--admin-addr")
        .expect("the admin-listener step");
    assert!(
        try_it[..admin].contains("stop the server"),
        "the admin step must say to stop the first server"
    );
}
