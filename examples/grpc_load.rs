//! A closed-loop load generator for portcullis's gRPC `Check`, for BENCHMARKS.md.
//!
//! cargo run --release --example grpc_load -- --addr 127.0.0.1:9191 --token "$TOKEN" \
//!     --connections 4 --concurrency 64 --seconds 10 [--against-health --rounds 3]
//!
//! Prints requests per second and latency percentiles; exits non-zero if any answer was
//! not the expected allow (so a misconfigured run is not mistaken for a fast one).
//! `--against-health` interleaves rounds of the same server's empty `grpc.health.v1`
//! call with the `Check` rounds, over the same connections at the same concurrency, and
//! prints the ratio of the medians: what a decision costs next to the RPC itself.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use clap::Parser;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

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
    /// Send exactly this many requests a round (spread over the tasks) instead of for
    /// `--seconds`: for instruction counts (`scripts/callgrind-check.sh`).
    #[arg(long)]
    requests: Option<usize>,
    /// Expected gRPC status code of each answer (0 = allow).
    #[arg(long, default_value_t = 0)]
    expect_code: i32,
    /// Rounds of each call, interleaved.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Also drive the empty health call, a round of it before each `Check` round.
    #[arg(long)]
    against_health: bool,
    /// Drive only the health call (the transport's own cost, for profiles).
    #[arg(long, conflicts_with = "against_health")]
    only_health: bool,
    /// The server's process id (same machine): print its CPU time per request each round.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the two calls' bodies, gRPC-framed, to DIR/check.bin and DIR/health.bin and
    /// exit: for another client (h2load) to send the very same messages.
    #[arg(long, value_name = "DIR")]
    write_bodies: Option<std::path::PathBuf>,
}

/// A message as one gRPC frame: uncompressed, its length, the bytes.
fn framed(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// utime + stime of a process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: count fields after its closing parenthesis.
    let after = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))?
        .1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// Clock ticks per second (`getconf CLK_TCK`): 100 on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

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

/// Sends a request encoded once, up front, and decodes the answer: the client's own cost
/// is then the same small one for both calls, and what differs is the server's.
struct PreEncoded<U>(PhantomData<U>);

impl<U: Message + Default + Send + 'static> Codec for PreEncoded<U> {
    type Encode = Bytes;
    type Decode = U;
    type Encoder = Self;
    type Decoder = Self;
    fn encoder(&mut self) -> Self {
        PreEncoded(PhantomData)
    }
    fn decoder(&mut self) -> Self {
        PreEncoded(PhantomData)
    }
}

impl<U> Encoder for PreEncoded<U> {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl<U: Message + Default> Decoder for PreEncoded<U> {
    type Item = U;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// One unary call of `path` with the pre-encoded `body`.
async fn call<U: Message + Default + Send + 'static>(
    channel: Channel,
    path: &'static str,
    body: Bytes,
) -> Result<U, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let codec = PreEncoded::<U>(PhantomData);
    let answer = grpc
        .unary(
            tonic::Request::new(body),
            PathAndQuery::from_static(path),
            codec,
        )
        .await?;
    Ok(answer.into_inner())
}

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";
const HEALTH: &str = "/grpc.health.v1.Health/Check";

struct Round {
    requests: usize,
    per_second: f64,
    p50: u32,
    p99: u32,
    max: u32,
    wrong: u64,
    /// Server CPU time per request, when `--server-pid` is given.
    cpu_us: Option<f64>,
}

/// `concurrency` tasks, spread over the channels, each calling `call` in a loop until the
/// round's time is up; `call` says whether the answer was the expected one.
async fn round<F, Fut>(args: &Args, channels: &[Channel], call: F) -> anyhow::Result<Round>
where
    F: Fn(Channel) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let cpu_before = args.server_pid.map(cpu_ticks).transpose()?;
    let mut tasks = Vec::new();
    for i in 0..args.concurrency {
        let channel = channels[i % channels.len()].clone();
        let call = call.clone();
        // This task's share of `--requests`, if given.
        let share = args
            .requests
            .map(|n| n / args.concurrency + usize::from(i < n % args.concurrency));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut wrong = 0u64;
            while match share {
                Some(n) => latencies.len() < n,
                None => Instant::now() < deadline,
            } {
                let t = Instant::now();
                let right = call(channel.clone()).await;
                latencies.push(t.elapsed().as_micros() as u32);
                wrong += u64::from(!right);
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
    let cpu_us = match (args.server_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(
            (cpu_ticks(pid)? - before) as f64 / TICKS_PER_SECOND * 1e6 / latencies.len() as f64,
        ),
        _ => None,
    };
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    Ok(Round {
        requests: latencies.len(),
        per_second: latencies.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        max: latencies.last().copied().unwrap_or(0),
        wrong,
        cpu_us,
    })
}

fn print(what: &str, r: &Round, seconds: u64) {
    let cpu = r
        .cpu_us
        .map(|us| format!("; server CPU {us:.1} us per request"))
        .unwrap_or_default();
    println!(
        "{what:<6} requests {} in {seconds}s: {:.0} req/s; latency p50 {} us, p99 {} us, max {} us; unexpected answers {}{cpu}",
        r.requests, r.per_second, r.p50, r.p99, r.max, r.wrong
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let template = Bytes::from(request(&args).encode_to_vec());
    let probe = Bytes::from(HealthCheckRequest::default().encode_to_vec());
    if let Some(dir) = &args.write_bodies {
        std::fs::write(dir.join("check.bin"), framed(&template))?;
        std::fs::write(dir.join("health.bin"), framed(&probe))?;
        return Ok(());
    }
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://{}", args.addr))?
                .connect()
                .await?,
        );
    }
    // Warmed up with the call the run drives: a count of health calls holds no `Check`.
    if args.only_health {
        let _: HealthCheckResponse = call(channels[0].clone(), HEALTH, probe.clone()).await?;
    } else {
        let warmup: CheckResponse = call(channels[0].clone(), CHECK, template.clone()).await?;
        let code = warmup.status.map(|s| s.code).unwrap_or(-1);
        anyhow::ensure!(
            code == args.expect_code,
            "warm-up answer has gRPC code {code}, expected {}",
            args.expect_code
        );
    }

    let expect = args.expect_code;
    let check = move |channel: Channel| {
        let body = template.clone();
        async move {
            let answer = call::<CheckResponse>(channel, CHECK, body).await;
            matches!(answer, Ok(r) if r.status.as_ref().map(|s| s.code) == Some(expect))
        }
    };
    let health = move |channel: Channel| {
        let body = probe.clone();
        async move {
            let answer = call::<HealthCheckResponse>(channel, HEALTH, body).await;
            matches!(answer, Ok(r) if r.status() == ServingStatus::Serving)
        }
    };
    let (mut checks, mut healths, mut wrong) = (Vec::new(), Vec::new(), 0);
    for _ in 0..args.rounds {
        if args.against_health || args.only_health {
            let r = round(&args, &channels, health.clone()).await?;
            print("health", &r, args.seconds);
            healths.push(r.per_second);
            wrong += r.wrong;
            if args.only_health {
                continue;
            }
        }
        let r = round(&args, &channels, check.clone()).await?;
        print("check", &r, args.seconds);
        checks.push(r.per_second);
        wrong += r.wrong;
    }
    if args.against_health {
        let (check, health) = (median(checks), median(healths));
        println!(
            "medians: check {check:.0} req/s, health {health:.0} req/s; check/health {:.2}",
            check / health
        );
    }
    anyhow::ensure!(wrong == 0, "{wrong} answers were not the expected one");
    Ok(())
}
