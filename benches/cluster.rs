//! Kubernetes mode at scale: `cargo bench --bench cluster`.
//!
//! `serve --kube` (the release binary) against the in-repo fake API server holding 10,000
//! AccessPolicies and 100,000 Users. Prints time to ready, resident memory (at ready, 2 s
//! after and 20 s after, settled, as `scripts/bench-memory.sh` reads file mode), the time
//! from a policy edit to the first decision that uses it (target < 1 s), from a User created
//! elsewhere (another replica, `kubectl`) to a decision that finds it (target < 100 ms), and
//! the CPU the process spends per User event. Figures go to BENCHMARKS.md.
//! `CLUSTER_BENCH_POLICIES` and `CLUSTER_BENCH_USERS` change the sizes; `PORTCULLIS` runs
//! another build of the binary, for a side-by-side comparison in one sitting;
//! `CLUSTER_BENCH_FRESH=1` leaves every object without a status, as at a first install,
//! so that the status writer has every verdict to write.

#[path = "common/cluster.rs"]
mod cluster_common;
#[path = "../tests/support/fake_apiserver/mod.rs"]
#[allow(dead_code)]
mod fake_apiserver;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use cluster_common::*;
use fake_apiserver::FakeApiServer;

fn object(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": API, "kind": kind, "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

fn policy(i: usize, method: &str) -> Value {
    object(
        "AccessPolicy",
        &format!("policy-{i:05}"),
        json!({"engine": "matcho", "matcho": {"request-method": method, "uri": format!("#^/svc-{i}/")}}),
    )
}

fn user(name: &str, sub: &str) -> Value {
    object(
        "User",
        name,
        json!({"identifier": [{"system": SYSTEM, "value": sub}],
               "data": {"name": name, "roles": ["reader"]}, "email": format!("{name}@example.com")}),
    )
}

struct Serve {
    child: Child,
    http: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Resident memory now.
    fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// The most resident memory so far: what a container's memory limit must hold.
    fn peak_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }

    fn status_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib / 1024.0
    }

    /// User + system CPU of the process so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }
}

async fn decide(
    client: &reqwest::Client,
    serve: &Serve,
    method: &str,
    path: &str,
    sub: &str,
) -> (u16, Option<String>) {
    let response = client
        .request(
            method.parse().unwrap(),
            format!("{}/ext-authz{path}", serve.http),
        )
        .bearer_auth(token(sub))
        .send()
        .await
        .unwrap();
    let user = response
        .headers()
        .get("x-portcullis-user")
        .map(|v| v.to_str().unwrap().to_string());
    (response.status().as_u16(), user)
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:.1} ms, max {:.1} ms ({} runs)",
        ms(samples[samples.len() / 2]),
        ms(*samples.last().unwrap()),
        samples.len()
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let Some(full) = full_run("cluster") else {
        return;
    };
    let scale = |n: usize, small: usize| if full { n } else { small };
    let policies = size("CLUSTER_BENCH_POLICIES", scale(10_000, 20));
    let users = size("CLUSTER_BENCH_USERS", scale(100_000, 200));
    let fake = FakeApiServer::start().await;
    fake.apply(object(
        "IdentityProvider",
        "kc",
        json!({"system": SYSTEM, "userinfo-source": "id-token"}),
    ));
    fake.apply(object(
        "TokenIntrospector",
        "auth",
        json!({"type": "jwt", "jwt": {"iss": ISS, "secret": SECRET},
               "identity_provider": {"reference": "IdentityProvider/kc"}}),
    ));
    // As after an earlier run: each object already says it serves, so the status writer has
    // nothing to write and the figures are those of a replica restarting.
    let fresh = std::env::var("CLUSTER_BENCH_FRESH").is_ok_and(|v| v == "1");
    let served = |fake: &FakeApiServer, plural: &str, stored: Value| {
        if fresh {
            return;
        }
        let name = stored["metadata"]["name"].as_str().unwrap();
        let generation = stored["metadata"]["generation"].clone();
        fake.set_status(
            API,
            plural,
            NS,
            name,
            json!({
            "observedGeneration": generation,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Accepted",
                "message": "serving", "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": generation}]}),
        );
    };
    for i in 0..policies {
        served(&fake, "accesspolicies", fake.apply(policy(i, "get")));
    }
    for i in 0..users {
        served(
            &fake,
            "users",
            fake.apply(user(&format!("user-{i:06}"), &format!("sub-{i}"))),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: f, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: f, user: {{}}}}]\ncontexts: [{{name: f, context: {{cluster: f, user: f}}}}]\n\
             current-context: f\n",
            fake.url()
        ),
    )
    .unwrap();

    let http_port = free_port();
    let binary =
        std::env::var("PORTCULLIS").unwrap_or_else(|_| env!("CARGO_BIN_EXE_portcullis").into());
    let child = Command::new(binary)
        .args(["serve", "--kube", "--decision-log-allow-sample", "0"])
        .arg("--grpc-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{http_port}"))
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", NS)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let serve = Serve {
        child,
        http: format!("http://127.0.0.1:{http_port}"),
    };
    let client = reqwest::Client::new();
    let ready = time_until(Duration::from_secs(60), || async {
        let r = client.get(format!("{}/readyz", serve.http)).send().await;
        r.is_ok_and(|r| r.status() == 200)
    })
    .await;
    println!("cluster: {policies} AccessPolicies, {users} Users from the fake API server");
    println!(
        "  time to ready                 {:.2} s (CPU {:.2} s)",
        ready.as_secs_f64(),
        serve.cpu().as_secs_f64()
    );
    println!(
        "  resident memory when ready    {:.1} MiB (peak {:.1} MiB)",
        serve.rss_mib(),
        serve.peak_mib()
    );
    // As `scripts/bench-memory.sh` reads file mode: 2 s after ready, while jemalloc still
    // holds the load's garbage, and 20 s after, once its ~10 s decay has handed it back.
    // Nothing happens in between, so that the settled figure is what stays. A full run only.
    if full {
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "  resident memory 2 s after     {:.1} MiB (peak {:.1} MiB)",
            serve.rss_mib(),
            serve.peak_mib()
        );
        tokio::time::sleep(Duration::from_secs(18)).await;
        println!(
            "  resident memory 20 s after    {:.1} MiB (settled: anonymous {:.1}, files {:.1})",
            serve.rss_mib(),
            serve.status_mib("RssAnon:"),
            serve.status_mib("RssFile:")
        );
    }

    // A policy edit, to the first decision that uses it; and the CPU each costs the
    // replica (a rebuild of every policy, here all in one namespace), steadier than the
    // wall clock on a shared machine.
    let mut edits = Vec::new();
    let before = serve.cpu();
    for round in 0..scale(10, 2) {
        let i = (round * 997) % policies;
        let path = format!("/svc-{i}/x");
        for method in ["POST", "GET"] {
            fake.apply(policy(i, &method.to_lowercase()));
            edits.push(
                time_until(Duration::from_secs(60), || async {
                    decide(&client, &serve, method, &path, "sub-1").await.0 == 200
                })
                .await,
            );
        }
    }
    let each = (serve.cpu() - before).as_secs_f64() * 1000.0 / edits.len() as f64;
    println!(
        "  policy edit → decision        {} (CPU {each:.0} ms each)",
        summary(edits)
    );

    // A User created elsewhere, to a decision that finds it.
    let mut found = Vec::new();
    for k in 0..scale(20, 3) {
        let name = format!("new-{k}");
        let sub = format!("new-sub-{k}");
        fake.apply(user(&name, &sub));
        found.push(
            time_until(Duration::from_secs(60), || async {
                decide(&client, &serve, "GET", "/svc-1/x", &sub)
                    .await
                    .1
                    .as_deref()
                    == Some(format!("{NS}/{name}").as_str())
            })
            .await,
        );
    }
    println!("  User created → decision       {}", summary(found));

    // CPU per User event: events one at a time, then a burst.
    for (label, count, gap) in [
        ("one at a time", scale(200, 10), Duration::from_millis(20)),
        ("in a burst", scale(2_000, 50), Duration::ZERO),
    ] {
        let before = serve.cpu();
        let last = format!("cpu-{label}-{}", count - 1).replace(' ', "-");
        for k in 0..count {
            let name = format!("cpu-{label}-{k}").replace(' ', "-");
            fake.apply(user(&name, &format!("{name}-sub")));
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
        }
        let sub = format!("{last}-sub");
        time_until(Duration::from_secs(60), || async {
            decide(&client, &serve, "GET", "/svc-1/x", &sub)
                .await
                .1
                .as_deref()
                == Some(format!("{NS}/{last}").as_str())
        })
        .await;
        let spent = serve.cpu() - before;
        println!(
            "  CPU per User event, {label:<13} {:.2} ms ({count} events, {:.0} ms in all)",
            spent.as_secs_f64() * 1000.0 / count as f64,
            spent.as_secs_f64() * 1000.0
        );
    }
    println!(
        "  resident memory at the end    {:.1} MiB (peak {:.1} MiB)",
        serve.rss_mib(),
        serve.peak_mib()
    );
}
