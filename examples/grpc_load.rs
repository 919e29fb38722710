//! A closed-loop load generator for portcullis's gRPC `Check`, for BENCHMARKS.md.
//!
//! cargo run --release --example grpc_load -- --addr 127.0.0.1:9191 --token "$TOKEN" \
//!     --connections 4 --concurrency 64 --seconds 10
//!
//! Prints requests per second and latency percentiles; exits non-zero if any answer was
//! not the expected allow (so a misconfigured run is not mistaken for a fast one).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Parser;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9191")]
    addr: String,
    #[arg(long)]
    token: String,
    #[arg(long, default_value = "/fhir/Patient")]
    path: String,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Expected gRPC status code of each answer (0 = allow).
    #[arg(long, default_value_t = 0)]
    expect_code: i32,
}

fn request(args: &Args) -> CheckRequest {
    let headers = HashMap::from([
        (
            "authorization".to_string(),
            format!("Bearer {}", args.token),
        ),
        (":authority".to_string(), "api.example.com".to_string()),
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), args.path.clone()),
    ]);
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: args.path.clone(),
                    host: "api.example.com".into(),
                    scheme: "http".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let template = request(&args);
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", args.addr))?
            .connect()
            .await?;
        clients.push(AuthorizationClient::new(channel));
    }
    let warmup = clients[0]
        .clone()
        .check(template.clone())
        .await?
        .into_inner();
    let code = warmup.status.map(|s| s.code).unwrap_or(-1);
    anyhow::ensure!(
        code == args.expect_code,
        "warm-up answer has gRPC code {code}, expected {}",
        args.expect_code
    );

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.concurrency {
        let mut client = clients[i % clients.len()].clone();
        let request = template.clone();
        let expect = args.expect_code;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut wrong = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let answer = client.check(request.clone()).await;
                latencies.push(t.elapsed().as_micros() as u32);
                match answer {
                    Ok(r) if r.get_ref().status.as_ref().map(|s| s.code) == Some(expect) => {}
                    _ => wrong += 1,
                }
            }
            (latencies, wrong)
        }));
    }
    let mut latencies = Vec::new();
    let mut wrong = 0;
    for t in tasks {
        let (l, w) = t.await?;
        latencies.extend(l);
        wrong += w;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "requests {} in {:.1}s: {:.0} req/s; latency p50 {} us, p99 {} us, max {} us; unexpected answers {}",
        latencies.len(),
        elapsed,
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or(0),
        wrong
    );
    anyhow::ensure!(wrong == 0, "{wrong} answers were not the expected one");
    Ok(())
}
