//! Logging and the decision spans, set up once. `RUST_LOG` filters the logs (default
//! `info`); with an OTLP endpoint, one span per decision (target [`DECISION_SPANS`],
//! made in `server::spans`) is exported to it.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::LogFormat;
use crate::server::spans::DECISION_SPANS;

/// Flushes the spans still queued when dropped (at the end of `main`).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Must run inside a tokio runtime when `otlp_endpoint` is set: the exporter's gRPC
/// channel lives on it.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<Telemetry, String> {
    let provider = match otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name("portcullis")
                            .build(),
                    )
                    .build(),
            )
        }
    };
    // A second init (tests that run commands in-process) keeps the first.
    let _ = subscriber(format, provider.as_ref()).try_init();
    Ok(Telemetry { provider })
}

/// The logs, and the decision spans when there is a provider to export them.
fn subscriber(
    format: LogFormat,
    provider: Option<&SdkTracerProvider>,
) -> impl tracing::Subscriber + Send + Sync {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive(
            format!("{DECISION_SPANS}=off")
                .parse()
                .expect("a valid directive"),
        );
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(colour(
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
                std::env::var_os("NO_COLOR"),
            ))
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter);
    // Not an `Option` layer: a `None` layer is interested in everything, so every
    // decision's span would be created (and recorded, entered, closed) for no one.
    let spans = match provider {
        Some(provider) => tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("portcullis"))
            .boxed(),
        None => LevelFilter::OFF.boxed(),
    }
    .with_filter(Targets::new().with_target(DECISION_SPANS, LevelFilter::INFO));
    tracing_subscriber::registry().with(logs).with(spans)
}

/// Colour codes only for a terminal: a log file or a pipe gets plain text. `NO_COLOR`
/// (any non-empty value) turns them off on a terminal too.
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::HttpRequest;
    use crate::server::spans::decision_span;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }

    fn span_enabled(provider: Option<&SdkTracerProvider>) -> bool {
        let request = HttpRequest {
            method: "GET".into(),
            path: "/fhir/Patient".into(),
            ..HttpRequest::default()
        };
        tracing::subscriber::with_default(subscriber(LogFormat::Text, provider), || {
            !decision_span(&request).is_disabled()
        })
    }

    #[test]
    fn a_decision_has_a_span_only_when_spans_are_exported() {
        assert!(!span_enabled(None), "no endpoint: no span is made");
        let provider = SdkTracerProvider::builder().build();
        assert!(
            span_enabled(Some(&provider)),
            "an endpoint: the span is made"
        );
    }
}
