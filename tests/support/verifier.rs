//! The library's token verifier in-process, for tests of token validation without a
//! server: trust stores built from TokenIntrospector specs, and a verifier with its own
//! metrics.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use portcullis::metrics::Metrics;
use portcullis::resources::TokenIntrospectorSpec;
use portcullis::token::{Introspector, TokenSettings, TokenVerifier, TrustStore};

/// A trust store from `(name, TokenIntrospector spec)` pairs.
pub fn trust(introspectors: &[(&str, Value)]) -> TrustStore {
    let mut store = TrustStore::default();
    for (name, spec) in introspectors {
        let spec: TokenIntrospectorSpec = serde_json::from_value(spec.clone())
            .unwrap_or_else(|e| panic!("TokenIntrospector/{name} spec: {e}"));
        let introspector = Introspector::compile(name, &spec)
            .unwrap_or_else(|e| panic!("TokenIntrospector/{name}: {e:?}"));
        store
            .insert(introspector)
            .unwrap_or_else(|e| panic!("TokenIntrospector/{name}: {e:?}"));
    }
    store
}

/// The production defaults (2 s fetch timeout, 10 s refetch interval).
pub fn settings() -> TokenSettings {
    TokenSettings::default()
}

/// For tests of slowness: a 500 ms fetch timeout.
pub fn quick_timeout() -> TokenSettings {
    TokenSettings {
        fetch_timeout: Duration::from_millis(500),
        ..TokenSettings::default()
    }
}

/// A verifier with these settings, and the metrics it counts its events in.
pub fn verifier(settings: TokenSettings) -> (Arc<TokenVerifier>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (
        Arc::new(TokenVerifier::with_settings(settings, metrics.clone())),
        metrics,
    )
}
