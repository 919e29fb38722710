//! SIGTERM: say not ready first, keep answering for the drain period while Envoy and the
//! Service stop sending here, then stop the servers.

use std::time::Duration;

use tokio::sync::watch;

use super::health::Health;

/// Resolves when the servers should stop. Clone it for each server.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

pub fn on_signal(health: Health, drain_ms: u64) -> Stop {
    let (tx, rx) = watch::channel(false);
    let drain = Duration::from_millis(drain_ms);
    tokio::spawn(async move {
        signal().await;
        tracing::info!(drain_ms, "shutting down: not ready, draining");
        health.drain().await;
        tokio::time::sleep(drain).await;
        let _ = tx.send(true);
    });
    Stop(rx)
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
