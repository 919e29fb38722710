//! A real headless Chromium, driven over WebDriver (chromedriver), for tests of pages.
//!
//! Chromium is Debian's `chromium` (`/usr/bin/chromium`, or `$CHROMIUM_BIN`), its driver
//! `chromium-driver` (`/usr/bin/chromedriver`, or `$CHROMEDRIVER_BIN`), both installed by
//! `scripts/install-test-deps.sh`. A test that needs them fails when they are missing:
//! it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use super::process::{Supervised, START_ATTEMPTS};

/// Far beyond chromedriver's start-up on a loaded machine.
const DRIVER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a test waits for something to appear on a page.
pub const PAGE_WAIT: Duration = Duration::from_secs(20);

/// The window every page is drawn in (and screenshots are taken of).
pub const WINDOW: (u32, u32) = (1280, 1500);

/// `$<env_var>` when set, else `default`; panics when that does not exist.
fn browser_bin(env_var: &str, default: &str) -> PathBuf {
    let bin = std::env::var_os(env_var)
        .filter(|b| !b.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        bin.exists(),
        "{} not found (looked at ${env_var} and {default}): run scripts/install-test-deps.sh, \
         which installs Debian's chromium and chromium-driver",
        bin.display()
    );
    bin
}

pub fn chromium_bin() -> PathBuf {
    browser_bin("CHROMIUM_BIN", "/usr/bin/chromium")
}

pub fn chromedriver_bin() -> PathBuf {
    browser_bin("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
}

/// chromedriver in a process group of its own, so that the browsers it starts go with it
/// even when a test panics before closing its session.
struct Chromedriver {
    /// Dropped first: kills the group, then `process` reaps the driver.
    _group: ProcessGroup,
    process: Supervised,
    port: u16,
}

/// Kills a process group (by its id, a process this harness started) when dropped.
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -KILL -- -{} 2>/dev/null", self.0)])
            .status();
    }
}

impl Chromedriver {
    async fn start() -> Self {
        use std::os::unix::process::CommandExt as _;
        let bin = chromedriver_bin();
        for attempt in 1..=START_ATTEMPTS {
            let port = super::free_port();
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .process_group(0);
            let mut process = Supervised::spawn("chromedriver", &mut cmd);
            let group = ProcessGroup(process.pid());
            let url = format!("http://127.0.0.1:{port}/status");
            let ready = |status: u16, body: &str| {
                status == 200
                    && serde_json::from_str::<Value>(body)
                        .is_ok_and(|v| v["value"]["ready"] == json!(true))
            };
            match process.wait_http(&url, DRIVER_READY_TIMEOUT, ready).await {
                Ok(()) => {
                    return Chromedriver {
                        _group: group,
                        process,
                        port,
                    }
                }
                Err(why) => {
                    drop(group);
                    process.retry_or_panic(attempt, &why);
                }
            }
        }
        unreachable!()
    }
}

/// A WebDriver session in a fresh headless Chromium (its own profile directory).
pub struct Browser {
    client: Option<Client>,
    driver: Chromedriver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session in headless Chromium.
    pub async fn start() -> Browser {
        let chromium = chromium_bin();
        let driver = Chromedriver::start().await;
        let profile = tempfile::Builder::new()
            .prefix("chromium-profile-")
            .tempdir()
            .expect("create a Chromium profile directory");
        let args = chromium_args(profile.path());
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": args,
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no WebDriver session in {}: {e}\n{}",
                    chromium.display(),
                    driver.process.log_report()
                )
            });
        Browser {
            client: Some(client),
            driver,
            _profile: profile,
        }
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    /// Loads `url` and waits until `css` matches an element.
    pub async fn open(&self, url: &str, css: &str) {
        self.client()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("load {url}: {e}"));
        self.wait_for(css).await;
    }

    /// Waits until `css` matches an element, and returns it.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client()
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => {
                let page = self.client().source().await.unwrap_or_default();
                panic!("no {css} on the page after {PAGE_WAIT:?}: {e}\npage:\n{page}")
            }
        }
    }

    /// The element `css` matches now.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
    }

    /// Every element `css` matches now.
    pub async fn find_all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.client()
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find all {css}: {e}"))
    }

    /// The rendered text of the element `css` matches.
    pub async fn text(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }

    /// Replaces the value of the input or textarea `css` matches by typing `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        if !text.is_empty() {
            field
                .send_keys(text)
                .await
                .unwrap_or_else(|e| panic!("type into {css}: {e}"));
        }
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn eval(&self, script: &str) -> Value {
        self.client()
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("execute {script:?}: {e}"))
    }

    /// Writes a PNG of the window to `path` (its directory created).
    pub async fn screenshot(&self, path: &Path) {
        let png = self
            .client()
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Ends the session (Chromium quits), then chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            if let Err(e) = client.close().await {
                eprintln!("closing the WebDriver session: {e}");
            }
        }
    }
}

/// Headless, and quiet on the network: without the background-networking flags Chromium
/// keeps reaching for update, sync and component servers that a closed network refuses.
fn chromium_args(profile: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        "--lang=en-US",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.push(format!("--window-size={},{}", WINDOW.0, WINDOW.1));
    args.push(format!("--user-data-dir={}", profile.display()));
    args
}

/// Where tests keep what a person may want to look at afterwards (screenshots):
/// `<target dir>/test-artifacts/`.
pub fn artifacts_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_portcullis"));
    // <target>/<profile>/portcullis
    bin.parent()
        .and_then(Path::parent)
        .map(|target| target.join("test-artifacts"))
        .unwrap_or_else(|| super::repo_path("target/test-artifacts"))
}
