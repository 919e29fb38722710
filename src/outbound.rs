//! The one HTTP client for calls to identity providers: JWKS, discovery, introspection and
//! userinfo.
//!
//! Every call has one deadline from connect to the last byte, follows no redirects (the
//! configured URL is the endpoint: a redirect elsewhere would carry credentials along),
//! sends portcullis's user agent, reads at most a given number of bytes, and fails with an
//! error that never quotes a token, a secret or a header. It calls only `http` and `https`
//! URLs, and with `--outbound-allow-host` only those hosts.
//!
//! HTTPS trusts the system's roots, the bundled web roots, and every `--ca-file`
//! ([`ExtraRoots`]): a certificate chain that none of them anchors fails with an error
//! saying so and how to fix it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use reqwest::redirect::Policy;
use serde_json::{Map, Value};

#[derive(Clone)]
pub struct IdpClient {
    client: reqwest::Client,
    timeout: Duration,
    /// Hosts that may be called (`idp.example.com`, or `*.example.com` for its
    /// subdomains); empty: any.
    allowed_hosts: Arc<[String]>,
}

/// Why a call failed, in words safe for logs and answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("timed out after {0} ms")]
    Timeout(u128),
    #[error("could not connect")]
    Connect,
    #[error("certificate not trusted: add the CA with --ca-file")]
    UntrustedCertificate,
    #[error("redirected (redirects are not followed)")]
    Redirect,
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("answer could not be read")]
    Read,
    #[error("answer is not JSON")]
    NotJson,
    #[error("answer is not a JSON object")]
    NotObject,
    #[error("the authorization is not a valid header value")]
    BadAuthorization,
    #[error("not an http or https URL")]
    NotHttp,
    #[error("host {0} is not one that --outbound-allow-host allows")]
    HostNotAllowed(String),
    #[error("request failed")]
    Failed,
}

impl CallError {
    /// Worth one more try: the connection failed, or the server said it is overloaded. A
    /// timeout is not: a retry would spend the request's time twice.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Connect | CallError::Read | CallError::Failed => true,
            CallError::Status(s) => *s >= 500 || *s == 429,
            _ => false,
        }
    }
}

/// Certificate authorities that HTTPS calls trust besides the system's and the bundled
/// roots: the certificates of every `--ca-file` PEM bundle (a cluster's private CA).
#[derive(Clone, Default)]
pub struct ExtraRoots {
    certs: Vec<reqwest::Certificate>,
}

impl ExtraRoots {
    /// Every certificate of these PEM files. A file that cannot be read, holds no
    /// certificate, or holds one that cannot be parsed is an error naming the file.
    pub fn from_files(paths: &[PathBuf]) -> anyhow::Result<Self> {
        let mut certs = Vec::new();
        for path in paths {
            certs.extend(read_ca_file(path)?);
        }
        Ok(ExtraRoots { certs })
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

fn read_ca_file(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let named = |what: &str| anyhow::anyhow!("--ca-file {}: {what}", path.display());
    let pem = std::fs::read(path).map_err(|e| named(&format!("cannot be read: {e}")))?;
    let mut certs = Vec::new();
    // A trust anchor is checked here, so that a broken one names its file rather than
    // failing the client's build.
    let mut check = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der = der.map_err(|e| named(&format!("is not PEM: {e}")))?;
        check
            .add(der.clone())
            .map_err(|e| named(&format!("holds a certificate that cannot be used: {e}")))?;
        certs.push(
            reqwest::Certificate::from_der(&der)
                .map_err(|e| named(&format!("holds a certificate that cannot be used: {e}")))?,
        );
    }
    if certs.is_empty() {
        return Err(named("holds no PEM certificate"));
    }
    Ok(certs)
}

impl IdpClient {
    /// `timeout` bounds each whole call. Trusts the system's and the bundled roots.
    pub fn new(timeout: Duration) -> Self {
        Self::trusting(timeout, &ExtraRoots::default())
            .expect("the HTTP client for identity providers builds")
    }

    /// As [`IdpClient::new`], also trusting `roots`. Fails only when the system's
    /// certificate store holds certificates, none of them usable.
    pub fn trusting(timeout: Duration, roots: &ExtraRoots) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeout)
            .redirect(Policy::none())
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")));
        for cert in &roots.certs {
            builder = builder.add_root_certificate(cert.clone());
        }
        let client = builder.build().map_err(|e| {
            anyhow::anyhow!(
                "building the HTTP client for identity providers: {}",
                error_chain(&e)
            )
        })?;
        Ok(IdpClient {
            client,
            timeout,
            allowed_hosts: Arc::new([]),
        })
    }

    /// Calls only these hosts (`*.example.com` allows the subdomains of `example.com`);
    /// none given allows any.
    pub fn allowing_hosts(mut self, hosts: &[String]) -> Self {
        self.allowed_hosts = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        self
    }

    /// The URL is `http` or `https`, to a host that may be called.
    fn check_url(&self, url: &str) -> Result<(), CallError> {
        let url = reqwest::Url::parse(url).map_err(|_| CallError::NotHttp)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(CallError::NotHttp);
        }
        let host = url
            .host_str()
            .ok_or(CallError::NotHttp)?
            .to_ascii_lowercase();
        let allowed = self.allowed_hosts.is_empty()
            || self
                .allowed_hosts
                .iter()
                .any(|a| match a.strip_prefix("*.") {
                    Some(domain) => host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                    None => *a == host,
                });
        if allowed {
            Ok(())
        } else {
            Err(CallError::HostNotAllowed(host))
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `GET url` for a JSON object, with `Authorization: authorization` when given.
    pub async fn get_json(
        &self,
        url: &str,
        authorization: Option<&str>,
        max_body: usize,
    ) -> Result<Map<String, Value>, CallError> {
        self.check_url(url)?;
        self.call(self.client.get(url), authorization, max_body)
            .await
    }

    /// `POST url` of a form, for a JSON object (RFC 7662 introspection).
    pub async fn post_form_json(
        &self,
        url: &str,
        form: &[(&str, &str)],
        authorization: Option<&str>,
        max_body: usize,
    ) -> Result<Map<String, Value>, CallError> {
        self.check_url(url)?;
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = self
            .client
            .post(url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        self.call(request, authorization, max_body).await
    }

    async fn call(
        &self,
        mut request: reqwest::RequestBuilder,
        authorization: Option<&str>,
        max_body: usize,
    ) -> Result<Map<String, Value>, CallError> {
        request = request.header(http::header::ACCEPT, "application/json");
        if let Some(value) = authorization {
            let mut value =
                HeaderValue::from_str(value).map_err(|_| CallError::BadAuthorization)?;
            // Keeps it out of any debug output of the request.
            value.set_sensitive(true);
            request = request.header(http::header::AUTHORIZATION, value);
        }
        let call = async {
            let mut response = request.send().await.map_err(|e| self.describe(e))?;
            let status = response.status();
            if status.is_redirection() {
                return Err(CallError::Redirect);
            }
            if !status.is_success() {
                return Err(CallError::Status(status.as_u16()));
            }
            if response
                .content_length()
                .is_some_and(|n| n > max_body as u64)
            {
                return Err(CallError::TooLarge(max_body));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| self.describe(e))? {
                if body.len() + chunk.len() > max_body {
                    return Err(CallError::TooLarge(max_body));
                }
                body.extend_from_slice(&chunk);
            }
            match serde_json::from_slice(&body) {
                Ok(Value::Object(map)) => Ok(map),
                Ok(_) => Err(CallError::NotObject),
                Err(_) => Err(CallError::NotJson),
            }
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(CallError::Timeout(self.timeout.as_millis())))
    }

    /// reqwest's own message names the URL; ours says only what went wrong.
    fn describe(&self, e: reqwest::Error) -> CallError {
        if e.is_timeout() {
            CallError::Timeout(self.timeout.as_millis())
        } else if e.is_connect() && untrusted_certificate(&e) {
            CallError::UntrustedCertificate
        } else if e.is_connect() {
            CallError::Connect
        } else if e.is_body() || e.is_decode() {
            CallError::Read
        } else {
            CallError::Failed
        }
    }
}

/// The server's certificate chain leads to no root that this client trusts: somewhere in
/// `e`'s sources is rustls's `UnknownIssuer`. An `io::Error` hides the error it wraps
/// from `source()` (and may wrap another `io::Error`), so each one is opened.
fn untrusted_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(c)) = e.downcast_ref::<rustls::Error>() {
            return matches!(c, rustls::CertificateError::UnknownIssuer);
        }
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

/// `e` and its sources, for an error that quotes no URL (a client's build).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};

    async fn stub() -> String {
        let app = axum::Router::new()
            .route("/ok", get(|| async { r#"{"a": 1}"# }))
            .route(
                "/echo-auth",
                get(|h: HeaderMap| async move {
                    let auth = h.get("authorization").and_then(|v| v.to_str().ok());
                    format!(r#"{{"auth": {}}}"#, serde_json::json!(auth))
                }),
            )
            .route(
                "/form",
                post(|body: String| async move { serde_json::json!({ "form": body }).to_string() }),
            )
            .route(
                "/redirect",
                get(|| async { (StatusCode::FOUND, [("location", "/ok")]).into_response() }),
            )
            .route(
                "/big",
                get(|| async { format!(r#"{{"x": "{}"}}"#, "y".repeat(4096)) }),
            )
            .route("/list", get(|| async { "[1]" }))
            .route("/text", get(|| async { "hello" }))
            .route("/down", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route("/gone", get(|| async { StatusCode::NOT_FOUND }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "{}"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn every_call_is_bounded_and_never_follows_a_redirect() {
        let base = stub().await;
        let client = IdpClient::new(Duration::from_millis(300));
        let get = |path: &str| {
            let url = format!("{base}{path}");
            let client = client.clone();
            async move { client.get_json(&url, None, 1024).await }
        };
        assert_eq!(get("/ok").await.unwrap()["a"], 1);
        assert_eq!(get("/redirect").await, Err(CallError::Redirect));
        assert_eq!(get("/big").await, Err(CallError::TooLarge(1024)));
        assert_eq!(get("/list").await, Err(CallError::NotObject));
        assert_eq!(get("/text").await, Err(CallError::NotJson));
        assert_eq!(get("/down").await, Err(CallError::Status(503)));
        assert!(get("/down").await.unwrap_err().is_transient());
        assert!(!get("/gone").await.unwrap_err().is_transient());
        let e = get("/slow").await.unwrap_err();
        assert_eq!(e, CallError::Timeout(300));
        assert!(!e.is_transient(), "a retry would spend the time twice");
        // Nothing listens on port 9.
        let e = client.get_json("http://127.0.0.1:9/", None, 1024).await;
        assert!(e.unwrap_err().is_transient());
    }

    #[tokio::test]
    async fn sends_the_authorization_and_the_form_it_is_given() {
        let base = stub().await;
        let client = IdpClient::new(Duration::from_secs(5));
        let answer = client
            .get_json(&format!("{base}/echo-auth"), Some("Bearer t0k"), 1024)
            .await
            .unwrap();
        assert_eq!(answer["auth"], "Bearer t0k");
        let answer = client
            .post_form_json(&format!("{base}/form"), &[("token", "a&b")], None, 1024)
            .await
            .unwrap();
        assert_eq!(answer["form"], "token=a%26b");
        let e = client
            .get_json(&format!("{base}/ok"), Some("bad\nvalue"), 1024)
            .await;
        assert_eq!(e, Err(CallError::BadAuthorization));
    }

    #[test]
    fn a_ca_file_must_be_readable_and_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let key = rcgen::KeyPair::generate().unwrap();
            params.self_signed(&key).unwrap().pem()
        };
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let one = write("one.pem", &ca);
        let two = write("two.pem", &format!("a comment\n{ca}{ca}"));
        let roots = ExtraRoots::from_files(&[one.clone(), two]).unwrap();
        assert_eq!(roots.len(), 3);
        assert!(IdpClient::trusting(Duration::from_secs(1), &roots).is_ok());

        let missing = dir.path().join("missing.pem");
        let empty = write("empty.pem", "no certificate here\n");
        let broken = write(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        for (path, says) in [
            (missing, "cannot be read"),
            (empty, "holds no PEM certificate"),
            (broken, "holds a certificate that cannot be used"),
        ] {
            let e = ExtraRoots::from_files(&[one.clone(), path.clone()])
                .err()
                .unwrap()
                .to_string();
            assert!(
                e.starts_with(&format!("--ca-file {}: ", path.display())),
                "{e}"
            );
            assert!(e.contains(says), "{e}");
        }
    }

    #[tokio::test]
    async fn calls_only_http_urls_of_the_allowed_hosts() {
        let base = stub().await;
        let ok = format!("{base}/ok");
        let client = IdpClient::new(Duration::from_secs(5));
        assert!(
            client.get_json(&ok, None, 1024).await.is_ok(),
            "no list: any host"
        );
        for url in [
            "file:///etc/passwd",
            "ftp://127.0.0.1/x",
            "gopher://a/",
            "not a url",
        ] {
            assert_eq!(
                client.get_json(url, None, 1024).await,
                Err(CallError::NotHttp),
                "{url}"
            );
        }
        let only_idp = client.clone().allowing_hosts(&["IdP.example.com".into()]);
        assert_eq!(
            only_idp.get_json(&ok, None, 1024).await,
            Err(CallError::HostNotAllowed("127.0.0.1".into()))
        );
        assert_eq!(
            only_idp
                .post_form_json(&format!("{base}/form"), &[], None, 1024)
                .await,
            Err(CallError::HostNotAllowed("127.0.0.1".into()))
        );
        let loopback = client.clone().allowing_hosts(&["127.0.0.1".into()]);
        assert!(loopback.get_json(&ok, None, 1024).await.is_ok());

        let subdomains = client.allowing_hosts(&["*.example.com".into()]);
        assert_eq!(subdomains.check_url("https://a.example.com/jwks"), Ok(()));
        assert_eq!(subdomains.check_url("https://A.B.Example.com/jwks"), Ok(()));
        for denied in [
            "https://example.com/",
            "https://evilexample.com/",
            "https://example.com.evil.io/",
        ] {
            assert!(
                matches!(
                    subdomains.check_url(denied),
                    Err(CallError::HostNotAllowed(_))
                ),
                "{denied}"
            );
        }
    }
}
