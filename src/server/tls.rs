//! HTTPS for the admission webhook: a certificate and key read from PEM files and read
//! again whenever the files change, so that a rotated certificate (cert-manager, a
//! re-mounted Secret) serves on the next connection, without a restart.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use notify::{RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// How long a burst of file events must be quiet before the files are read again: a
/// rotation writes the certificate and the key one after the other.
const RELOAD_SETTLE: Duration = Duration::from_millis(200);
/// The files are also read this often, for file systems whose changes raise no event.
const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// ring, as everywhere else in portcullis.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain and key that new connections get.
pub struct ServingCert {
    current: ArcSwap<CertifiedKey>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ServingCert {
    /// Reads the pair; an error names the file at fault.
    pub fn load(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(ServingCert {
            current: ArcSwap::from_pointee(read_pair(cert_file, key_file)?),
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
        }))
    }

    /// Reads the files again. A pair that does not parse or match is refused and the
    /// current one keeps serving. Returns whether the certificate changed.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let pair = read_pair(&self.cert_file, &self.key_file)?;
        if pair.cert == self.current.load().cert {
            return Ok(false);
        }
        self.current.store(Arc::new(pair));
        Ok(true)
    }

    /// A TLS configuration that serves whatever pair is current at each handshake.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Reads the files again after each change of the directories that hold them (a
    /// mounted Secret changes by a swap of its `..data` link), and every minute. Lasts as
    /// long as the process.
    pub fn watch(self: &Arc<Self>) -> notify::Result<()> {
        let (events, mut changes) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = events.send(());
                }
            })?;
        let mut dirs: Vec<&Path> = [&self.cert_file, &self.key_file]
            .into_iter()
            .map(|f| f.parent().filter(|p| !p.as_os_str().is_empty()))
            .map(|p| p.unwrap_or(Path::new(".")))
            .collect();
        dirs.dedup();
        for dir in dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        let cert = self.clone();
        tokio::spawn(async move {
            let _watcher = watcher;
            let mut every = tokio::time::interval(RELOAD_EVERY);
            every.tick().await;
            loop {
                tokio::select! {
                    changed = changes.recv() => {
                        if changed.is_none() {
                            return;
                        }
                        while let Ok(Some(())) =
                            tokio::time::timeout(RELOAD_SETTLE, changes.recv()).await
                        {}
                    }
                    _ = every.tick() => {}
                }
                match cert.reload() {
                    Ok(true) => tracing::info!(
                        cert_file = %cert.cert_file.display(),
                        "webhook certificate reloaded"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::error!(
                        error = format!("{e:#}"),
                        "webhook certificate not reloaded; the previous one keeps serving"
                    ),
                }
            }
        });
        Ok(())
    }
}

/// A certificate chain and the private key that matches its first certificate.
fn read_pair(cert_file: &Path, key_file: &Path) -> anyhow::Result<CertifiedKey> {
    let cert_pem = std::fs::read(cert_file)
        .with_context(|| format!("reading --tls-cert-file {}", cert_file.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--tls-cert-file {}: not PEM", cert_file.display()))?;
    if chain.is_empty() {
        bail!(
            "--tls-cert-file {}: no CERTIFICATE in it",
            cert_file.display()
        );
    }
    let key_pem = std::fs::read(key_file)
        .with_context(|| format!("reading --tls-key-file {}", key_file.display()))?;
    // The parser's message never quotes the key.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).with_context(|| {
        format!(
            "--tls-key-file {}: no PEM private key in it",
            key_file.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, &provider()).with_context(|| {
        format!(
            "--tls-key-file {} does not fit --tls-cert-file {}",
            key_file.display(),
            cert_file.display()
        )
    })
}

/// A request's headers, on an HTTP/1 connection of the webhook.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` over TLS on `listener` until `stop`; each connection speaks HTTP/1.1 or
/// HTTP/2, as the client's ALPN asks.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: axum::Router,
    stop: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    tracing::warn!(error = %e, "webhook: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "webhook: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "webhook: TLS handshake timed out");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // HTTP/1: the request's headers arrive within this, or the connection closes.
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %e, "webhook: connection ended");
            }
        });
    }
}
