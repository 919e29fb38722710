//! An in-process upstream that echoes what reached it.
//!
//! Every request gets `200` with a JSON body
//! `{"method": "GET", "path": "/p", "query": "a=1", "headers": {"name": ["v", ...]}}`
//! (header names lower case, values in arrival order). Each request is also recorded,
//! so a test can check that a denied request never got here.
//!
//! The server runs on its own thread and tokio runtime, so it outlives any one test's
//! runtime; dropping the handle stops it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::ext_authz::Answer;

/// One request as the upstream saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Echoed {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub query: Option<String>,
    pub headers: BTreeMap<String, Vec<String>>,
}

impl Echoed {
    /// All values of a header (name matched case-insensitively).
    pub fn header_values(&self, name: &str) -> &[String] {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Asserts portcullis's identity headers as they arrived (`None`: absent).
    pub fn assert_identity(
        &self,
        subject: Option<&str>,
        issuer: Option<&str>,
        policy: Option<&str>,
    ) {
        for (name, want) in [
            ("x-portcullis-subject", subject),
            ("x-portcullis-issuer", issuer),
            ("x-portcullis-policy", policy),
        ] {
            assert_eq!(self.header(name), want, "{name}: {self:#?}");
        }
    }

    /// The single value of a header; panics if it came more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        match self.header_values(name) {
            [] => None,
            [one] => Some(one.as_str()),
            many => panic!("upstream saw header {name} {} times: {many:?}", many.len()),
        }
    }
}

type Log = Arc<Mutex<Vec<Echoed>>>;

pub struct EchoServer {
    addr: SocketAddr,
    log: Log,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Starts the echo server on 127.0.0.1 at a port of the kernel's choosing.
    pub fn start() -> Self {
        let log: Log = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind echo server");
        listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = listener.local_addr().expect("echo server addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new().fallback(echo).with_state(log.clone());
        let thread = std::thread::Builder::new()
            .name(format!("echo-upstream-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("echo server runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        res = axum::serve(listener, app) => {
                            if let Err(e) = res { eprintln!("echo server stopped: {e}"); }
                        }
                        _ = rx => {}
                    }
                });
                // Dropping the runtime here cancels any open connections.
            })
            .expect("spawn echo server thread");
        EchoServer {
            addr,
            log,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Echoed> {
        self.log.lock().unwrap().clone()
    }

    /// What the upstream saw of the request that `answer` answers: asserts a 200 from
    /// here, for `path`, which the upstream saw exactly once.
    pub fn answered_once(&self, answer: &Answer, path: &str) -> Echoed {
        assert_eq!(
            answer.status, 200,
            "GET {path} was not allowed: {answer:#?}"
        );
        let echoed = answer.echoed();
        assert_eq!(echoed.path, path.split('?').next().unwrap());
        assert_eq!(
            self.requests_to(&echoed.path).len(),
            1,
            "upstream should have seen {path} exactly once"
        );
        echoed
    }

    /// Asserts that no request for `path` ever got here.
    pub fn assert_never_saw(&self, path: &str) {
        assert!(
            self.requests_to(path).is_empty(),
            "{path}: denied, yet the upstream saw it"
        );
    }

    /// The requests received so far for exactly this path (without query).
    pub fn requests_to(&self, path: &str) -> Vec<Echoed> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn echo(
    State(log): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Json<Echoed> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &headers {
        map.entry(name.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let echoed = Echoed {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: map,
    };
    log.lock().unwrap().push(echoed.clone());
    Json(echoed)
}
