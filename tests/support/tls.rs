//! Certificates for tests of TLS servers: a CA of the test's own, the serving
//! certificates it signs, and an HTTPS client that trusts that CA alone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A serving certificate and its key.
pub struct ServingCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate as a server presents it.
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed CA"),
        }
    }

    /// The CA certificate, PEM: what a client trusts (a webhook's `caBundle`).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `localhost` and 127.0.0.1, signed by this CA, with `name` as its
    /// common name.
    pub fn serving(&self, name: &str) -> ServingCert {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        ServingCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl ServingCert {
    /// Writes `tls.crt` and `tls.key` into `dir` (as a mounted Secret of type
    /// `kubernetes.io/tls` holds them); returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        super::replace_file(dir, "tls.crt", &self.cert_pem);
        super::replace_file(dir, "tls.key", &self.key_pem);
        (cert, key)
    }
}

/// An HTTPS client that trusts `ca_pem` and nothing else, opens a new connection for each
/// request (so each one shows the certificate served now), and reports the server's
/// certificate (`reqwest::tls::TlsInfo`).
pub fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM"))
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build HTTPS client")
}

/// Asserts that `cert_pem` chains to `ca_pem` and is valid now for the DNS name `host`, as
/// a TLS client (the API server calling a webhook) checks it.
pub fn assert_signed_for(cert_pem: &str, ca_pem: &str, host: &str) {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
        .expect("a CA certificate");
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("certificate PEM");
    let name = ServerName::try_from(host.to_string()).expect("DNS name");
    verifier
        .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
        .unwrap_or_else(|e| panic!("the certificate is not valid for {host}: {e}"));
}
