//! One OpenTelemetry span per decision, exported over OTLP when `--otlp-endpoint` is set
//! (see `telemetry`). Its parent is Envoy's span for the request (W3C `traceparent` in the
//! checked request's headers), so the decision shows under the request's own span.
//!
//! Not the explain trace ([`crate::decision::Trace`]): that says why a decision was made,
//! for `portcullis explain` and the admin listener; a span says only when, and what came
//! of it.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::decision::{Decision, HttpRequest};

/// The target of the per-decision spans. Only the OTLP layer takes it: the logs never
/// see these spans, so without an endpoint no layer wants them and they cost nothing.
pub const DECISION_SPANS: &str = "portcullis::otel";

/// The span of one check; disabled (and free) unless spans are exported. Never carries
/// the query string or a header value: only the method and the path.
pub fn decision_span(request: &HttpRequest) -> Span {
    let span = tracing::info_span!(
        target: DECISION_SPANS,
        "ext_authz check",
        otel.kind = "server",
        http.request.method = %request.method,
        url.path = request.split_path().0,
        portcullis.outcome = Empty,
        portcullis.reason = Empty,
        portcullis.policy = Empty,
        portcullis.shadow = Empty,
        http.response.status_code = Empty,
    );
    if !span.is_disabled() && request.headers.iter().any(|(k, _)| k == "traceparent") {
        let parent = TraceContextPropagator::new().extract(&Headers(request));
        // A context without a valid remote span leaves the span a root: nothing to do.
        let _ = span.set_parent(parent);
    }
    span
}

/// Records the answer on the span.
pub fn record(span: &Span, decision: &Decision) {
    if span.is_disabled() {
        return;
    }
    span.record(
        "portcullis.outcome",
        if decision.allowed() { "allow" } else { "deny" },
    );
    span.record("portcullis.reason", decision.reason);
    if let Some(policy) = &decision.policy {
        span.record("portcullis.policy", policy.as_str());
    }
    if decision.shadow {
        span.record("portcullis.shadow", true);
    }
    span.record("http.response.status_code", decision.http_status());
}

struct Headers<'r>(&'r HttpRequest);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.headers.iter().map(|(k, _)| k.as_str()).collect()
    }
}
