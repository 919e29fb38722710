//! What the benches against the fake API server share (`cluster`, `users_on_demand`): the
//! names their clusters use, a token of the bench's issuer, a free port, a poll.
#![allow(dead_code)] // each bench uses some of these

use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

pub const API: &str = "portcullis.dev/v1alpha1";
pub const NS: &str = "bench";
pub const ISS: &str = "https://bench.example.com";
pub const SECRET: &str = "bench-secret-of-at-least-32-bytes!!";
pub const SYSTEM: &str = "https://kc.bench";

/// How this bench binary was asked to run: `None` when a filter names another bench (not
/// ours to run), else whether it is the full run (`cargo bench` passes `--bench`) rather
/// than the small one that `cargo test --all-targets` makes to prove it works.
pub fn full_run(name: &str) -> Option<bool> {
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with("--") && a != name)
    {
        return None;
    }
    Some(std::env::args().any(|a| a == "--bench"))
}

/// A size from the environment, or `default`.
pub fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An HS256 token of the bench's issuer for `sub`, valid for an hour.
pub fn token(sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    encode(
        &Header::default(),
        &json!({"iss": ISS, "sub": sub, "iat": now, "exp": now + 3600}),
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls every 2 ms until `done`, at most `bound`; the time it took.
pub async fn time_until<F, Fut>(bound: Duration, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < bound, "never happened");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}
