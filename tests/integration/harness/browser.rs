//! A real headless Chromium, driven over WebDriver: Debian's `chromium` and `chromedriver`
//! (installed by the test command), spoken to with the harness's own HTTP client. The driver is
//! stopped by its own handle, and the browser's profile is a temporary directory.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use super::{eventually, free_port, send, temp_dir};

/// WebDriver's name for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    /// The browser's profile, removed once the browser has quit.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A headless Chromium `width` × `height` CSS pixels.
    pub async fn start(width: u32, height: u32) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver (Debian's chromium-driver package; the test command installs it)",
            );
        let base = format!("http://127.0.0.1:{port}");
        let profile = temp_dir("keygate-chromium-");
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            _profile: profile,
        };
        eventually(
            "chromedriver answers",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || async {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_err()
                {
                    return Err("not listening yet".to_owned());
                }
                match browser.request("GET", "/status", None).await {
                    Ok(v) if v["ready"] == true => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        // The flags keep Chromium off the network it has no business on (this machine has
        // none) and inside its own temporary profile.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--window-size={width},{height}"),
            &format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let mut options = json!({"binary": "/usr/bin/chromium", "args": args});
        // A headless window is at least 500 pixels wide: a phone's width is emulated.
        if width < 500 {
            options["mobileEmulation"] =
                json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}});
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
        }}});
        let created = browser
            .request("POST", "/session", Some(caps))
            .await
            .unwrap();
        browser.session = created["sessionId"].as_str().unwrap().to_owned();
        browser
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map_or(String::new(), |b| b.to_string()),
            )))
            .unwrap();
        let (status, _, bytes) = send(req).await;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        match status.is_success() {
            true => Ok(value["value"].clone()),
            false => Err(value["value"].to_string()),
        }
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let body = (method != "GET").then_some(body);
        self.request(method, &path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url })).await;
    }

    /// The element `css` finds, waiting up to 5 s for it.
    pub async fn find(&self, css: &str) -> String {
        self.wait_for(&format!("document.querySelector({css:?}) !== null"))
            .await;
        let found = self
            .command(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    /// The element `xpath` finds (waiting up to 5 s).
    pub async fn find_xpath(&self, xpath: &str) -> String {
        let script = format!(
            "document.evaluate({xpath:?}, document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue !== null"
        );
        self.wait_for(&script).await;
        let found = self
            .command(
                "POST",
                "/element",
                json!({"using": "xpath", "value": xpath}),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    pub async fn click(&self, element: &str) {
        self.command("POST", &format!("/element/{element}/click"), json!({}))
            .await;
    }

    pub async fn type_into(&self, element: &str, text: &str) {
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// What `script` (a function body) returns in the page.
    pub async fn run(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Waits until `condition` (a JavaScript expression) is true in the page.
    pub async fn wait_for(&self, condition: &str) {
        let script = format!("return Boolean({condition});");
        eventually(
            condition,
            Duration::from_secs(5),
            Duration::from_millis(20),
            || async {
                match self.run(&script).await {
                    Value::Bool(true) => Ok(()),
                    other => Err(other.to_string()),
                }
            },
        )
        .await;
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64_decode::decode;
        let b64 = self.command("GET", "/screenshot", Value::Null).await;
        decode(b64.as_str().unwrap())
    }
}

impl Drop for Browser {
    /// Ends the session first, which makes chromedriver quit Chromium (killing the driver alone
    /// would leave the browser running, writing into its profile); then stops the driver. Plain
    /// blocking I/O: a `Drop` cannot wait on the runtime.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let address = self.base.trim_start_matches("http://");
        if let Ok(mut s) = std::net::TcpStream::connect(address) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = s.write_all(request.as_bytes());
            // chromedriver answers once Chromium has quit; the answer is read to its end (the
            // driver may keep the connection open).
            let mut answer = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = s.read(&mut buf) {
                answer.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&answer);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head.lines().find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    });
                    if length.is_some_and(|length| body.len() >= length) {
                        break;
                    }
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Chromium's last processes exit just after it answered: its profile lock goes with them.
        let lock = self._profile.path().join("SingletonLock");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lock.symlink_metadata().is_ok() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Base64 (the screenshot's encoding), decoded without another dependency.
mod base64_decode {
    pub fn decode(text: &str) -> Vec<u8> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        };
        let bytes: Vec<u8> = text
            .bytes()
            .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
            .collect();
        let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
        for chunk in bytes.chunks(4) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, c)| n | (u32::from(value(*c)) << (18 - 6 * i)));
            out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
        }
        out
    }
}
