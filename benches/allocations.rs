//! Allocations of a gRPC `Check` with a cached token, on the edge's three steps:
//! `cargo bench --bench allocations`. Counts, not time: the same on any host.
//!
//! Its own bench because the counting allocator (allocation-counter) slows every
//! allocation of the binary it is linked into; the timed benches stay without it.

mod common;

use std::hint::black_box;

use common::{authorizer, envoy_check_request, issuer_policy, token};
use portcullis::server::grpc::answer::to_check_response;
use portcullis::server::grpc::{to_http_request, wire};
use prost::Message;

const RUNS: u32 = 2_000;

/// The mean over many calls: the token cache allocates now and then for its own upkeep.
fn per_call(mut f: impl FnMut()) -> f64 {
    let info = allocation_counter::measure(|| (0..RUNS).for_each(|_| f()));
    info.count_total as f64 / f64::from(RUNS)
}

/// The same for a call that consumes its input, made (and not counted) before each call.
fn per_call_of<T>(mut input: impl FnMut() -> T, mut f: impl FnMut(T)) -> f64 {
    let total: u64 = (0..RUNS)
        .map(|_| {
            let input = input();
            allocation_counter::measure(|| f(input)).count_total
        })
        .sum();
    total as f64 / f64::from(RUNS)
}

fn main() {
    // Counted on this thread, where the current-thread runtime runs the decision.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bytes = envoy_check_request(&token("alice", "app"));
    let decode = || to_http_request(wire::CheckRequest::decode(bytes.as_slice()).unwrap());
    let a = authorizer(&issuer_policy());
    let request = decode();
    let decision = rt.block_on(a.check(&request));
    assert!(decision.allowed(), "{decision:?}");

    let decoding = per_call(|| {
        black_box(decode());
    });
    let deciding = per_call(|| {
        black_box(rt.block_on(a.check(&request)));
    });
    let answering = per_call_of(
        || decision.clone(),
        |d| {
            black_box(to_check_response(d).encode_to_vec());
        },
    );
    println!(
        "allocations per gRPC Check with a cached RS256 token: {decoding:.1} to decode Envoy's \
         request (ten headers), {deciding:.1} to decide, {answering:.1} to build and encode \
         the answer"
    );
}
