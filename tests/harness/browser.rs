//! Headless Chromium (Debian's `chromium`) driven over the Chrome DevTools
//! Protocol, for the console tests: launch with fake media devices, open
//! pages, type, click, read the page, take screenshots.
//!
//! A small client over tokio-tungstenite (already a dependency) rather than
//! the `chromiumoxide` crate: the tests need a dozen CDP methods, while that
//! crate brings ~110,000 lines of generated protocol bindings and second
//! copies of reqwest and tungstenite (about 3 minutes more to build on the
//! 2-core CI machine, before clippy checks it again).
//!
//! Pages are driven as a person would: clicks are mouse events at the
//! element's centre, typing is inserted text in the focused field. Every
//! wait is bounded ([`WAIT`]) and polls every [`POLL`].
//!
//! Included with `#[path = "../harness/browser.rs"] mod browser;` next to
//! `harness` (it uses `harness::spawn_tied`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// The longest any one wait may take.
pub const WAIT: Duration = Duration::from_secs(30);
/// How often a wait looks again.
pub const POLL: Duration = Duration::from_millis(100);

const INSTALL_HINT: &str = "Chromium is required for the console tests: install it with \
`apt-get install chromium` (scripts/test.sh does this), or set CHROMIUM to its path";

/// Flags for a headless, quiet browser that grants fake media at once.
const FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox", // the tests run as root
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--auto-select-desktop-capture-source=Entire screen",
    "--autoplay-policy=no-user-gesture-required",
    // Two pages at once in one browser: neither may be throttled as hidden.
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-sync",
    "--mute-audio",
    "--window-size=1280,900",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
];

type Reply = Result<Value, String>;

/// The browser's one DevTools socket: commands by id, events by session.
#[derive(Clone)]
struct Connection {
    out: mpsc::UnboundedSender<Message>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>,
    next_id: Arc<AtomicU64>,
    /// Console errors, exceptions and log entries, by session id.
    logs: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl Connection {
    async fn open(url: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open the DevTools socket {url}: {e}"));
        let (mut sink, mut stream) = socket.split();
        let (out, mut outbox) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = outbox.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let connection = Self {
            out,
            pending: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            logs: Arc::default(),
        };
        let reader = connection.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message {
                    reader.dispatch(&text);
                }
            }
            // Closed: every waiting command fails now rather than at its timeout.
            reader.pending.lock().unwrap().clear();
        });
        connection
    }

    fn dispatch(&self, text: &str) {
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if let Some(id) = message["id"].as_u64() {
            let waiting = self.pending.lock().unwrap().remove(&id);
            let reply = match message.get("error") {
                Some(error) => Err(error.to_string()),
                None => Ok(message["result"].clone()),
            };
            if let Some(waiting) = waiting {
                let _ = waiting.send(reply);
            }
        } else if let Some(line) = log_line(&message) {
            let session = message["sessionId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            self.logs
                .lock()
                .unwrap()
                .entry(session)
                .or_default()
                .push(line);
        }
    }

    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Reply {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = session.into();
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.out
            .send(Message::text(command.to_string()))
            .map_err(|_| format!("{method}: the DevTools socket is closed"))?;
        match tokio::time::timeout(WAIT, rx).await {
            Ok(Ok(reply)) => reply.map_err(|e| format!("{method}: {e}")),
            Ok(Err(_)) => Err(format!("{method}: the DevTools socket closed")),
            Err(_) => Err(format!("{method}: no answer within {WAIT:?}")),
        }
    }
}

/// A readable line for a console error, an exception or a log entry.
fn log_line(event: &Value) -> Option<String> {
    let params = &event["params"];
    match event["method"].as_str()? {
        "Runtime.exceptionThrown" => {
            let details = &params["exceptionDetails"];
            let text = details["exception"]["description"]
                .as_str()
                .or(details["text"].as_str())
                .unwrap_or("exception");
            Some(format!("exception: {text}"))
        }
        "Runtime.consoleAPICalled" if params["type"] == "error" => {
            let args: Vec<String> = params["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    a["value"]
                        .as_str()
                        .map_or_else(|| a.to_string(), String::from)
                })
                .collect();
            Some(format!("console.error: {}", args.join(" ")))
        }
        "Log.entryAdded" => {
            let entry = &params["entry"];
            Some(format!(
                "log {} {}: {} {}",
                entry["level"].as_str().unwrap_or_default(),
                entry["source"].as_str().unwrap_or_default(),
                entry["text"].as_str().unwrap_or_default(),
                entry["url"].as_str().unwrap_or_default()
            ))
        }
        _ => None,
    }
}

/// The browser to run: `$CHROMIUM`, else `chromium` on the PATH.
fn chromium_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("chromium not found on the PATH. {INSTALL_HINT}"))
}

/// The browser's process group, killed on drop (renderers and helpers too).
struct Process {
    child: Child,
    profile: tempfile::TempDir,
}

impl Process {
    fn start() -> Self {
        let binary = chromium_binary();
        let profile = tempfile::tempdir().expect("browser profile dir");
        let log = std::fs::File::create(profile.path().join("chromium.log")).expect("log file");
        let mut command = Command::new(&binary);
        command
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = crate::harness::spawn_tied(command)
            .unwrap_or_else(|e| panic!("cannot start {}: {e}. {INSTALL_HINT}", binary.display()));
        Self { child, profile }
    }

    /// Where the browser listens, from the `DevToolsActivePort` file it
    /// writes into its profile (port, then path) once it is up.
    async fn devtools_url(&mut self) -> String {
        let file = self.profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                return format!("ws://127.0.0.1:{}{}", port.trim(), path.trim());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "chromium exited ({status}) at start-up:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port within {WAIT:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A running headless Chromium with a fresh profile; killed on drop.
pub struct Browser {
    connection: Connection,
    process: Process,
}

impl Browser {
    /// Starts Chromium and connects to it; fails (never skips) when it is
    /// not installed.
    pub async fn launch() -> Self {
        let mut process = Process::start();
        let url = process.devtools_url().await;
        let connection = Connection::open(&url).await;
        Self {
            connection,
            process,
        }
    }

    /// The end of the browser's own log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// A new tab (its own window, so two pages are both "visible").
    pub async fn new_page(&self) -> Page {
        let created = self
            .connection
            .call(
                None,
                "Target.createTarget",
                json!({"url": "about:blank", "newWindow": true}),
            )
            .await
            .expect("create a page");
        let target = created["targetId"].as_str().expect("targetId").to_string();
        let attached = self
            .connection
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await
            .expect("attach to the page");
        let page = Page {
            connection: self.connection.clone(),
            session: attached["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string(),
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({})).await;
        }
        let viewport =
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false});
        page.call("Emulation.setDeviceMetricsOverride", viewport)
            .await;
        page
    }
}

/// One tab of the browser.
pub struct Page {
    connection: Connection,
    session: String,
}

impl Page {
    /// A CDP command on this page; panics with the protocol's error.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.connection
            .call(Some(&self.session), method, params)
            .await
            .unwrap_or_else(|e| panic!("{e}\npage log:\n{}", self.log()))
    }

    /// The page's console errors, exceptions and log entries so far.
    pub fn log(&self) -> String {
        let logs = self.connection.logs.lock().unwrap();
        logs.get(&self.session)
            .map_or_else(String::new, |l| l.join("\n"))
    }

    /// Opens `url` (as the browser spells it, e.g. with the trailing `/`)
    /// and waits until that document and its scripts have loaded.
    pub async fn goto(&self, url: &str) {
        let answer = self.call("Page.navigate", json!({"url": url})).await;
        if let Some(error) = answer["errorText"].as_str() {
            panic!("cannot open {url}: {error}");
        }
        let loaded = format!("location.href === {url:?} && document.readyState === 'complete'");
        self.wait_for(&format!("{url} to load"), &loaded).await;
    }

    /// The value of a JavaScript expression (promises awaited).
    pub async fn eval(&self, expression: &str) -> Value {
        let answer = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(details) = answer.get("exceptionDetails") {
            panic!("{expression} threw: {details}\npage log:\n{}", self.log());
        }
        answer["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy; returns its value.
    pub async fn wait_for(&self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.eval(expression).await;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what} ({expression})\npage log:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The text of the element with this id.
    pub async fn text(&self, id: &str) -> String {
        let value = self
            .eval(&format!("document.getElementById({id:?}).textContent"))
            .await;
        value.as_str().unwrap_or_default().trim().to_string()
    }

    /// Clicks the element with this id, once it is visible and enabled,
    /// with a left mouse button press and release at its centre.
    pub async fn click(&self, id: &str) {
        let find = format!(
            "(() => {{ const e = document.getElementById({id:?}); if (!e || e.disabled) return null;
               e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();
               return r.width > 0 && r.height > 0 ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()"
        );
        let at = self
            .wait_for(&format!("#{id} to be clickable"), &find)
            .await;
        let (x, y) = (at[0].as_f64().unwrap_or(0.0), at[1].as_f64().unwrap_or(0.0));
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            let event = json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1});
            self.call("Input.dispatchMouseEvent", event).await;
        }
    }

    /// Types `text` into the field with this id, replacing what it held.
    pub async fn fill(&self, id: &str, text: &str) {
        self.click(id).await;
        // Select what the field holds, so typing replaces it.
        self.eval(&format!("document.getElementById({id:?}).select()"))
            .await;
        if text.is_empty() {
            let key = json!({"key": "Delete", "code": "Delete", "windowsVirtualKeyCode": 46});
            for kind in ["keyDown", "keyUp"] {
                let mut event = key.clone();
                event["type"] = kind.into();
                self.call("Input.dispatchKeyEvent", event).await;
            }
        } else {
            self.call("Input.insertText", json!({"text": text})).await;
        }
        let now = self
            .eval(&format!("document.getElementById({id:?}).value"))
            .await;
        assert_eq!(now, json!(text), "#{id} does not hold what was typed");
    }

    /// Chooses an option of the `<select>` with this id (as a person picking
    /// it from the list would: the value changes, `change` fires).
    pub async fn select(&self, id: &str, value: &str) {
        self.eval(&format!(
            "(() => {{ const e = document.getElementById({id:?}); e.value = {value:?};
               e.dispatchEvent(new Event('change', {{bubbles: true}})); return e.value; }})()"
        ))
        .await;
    }

    /// A PNG of the whole page (down to the end of its body), written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        // The body's extent: all of the content, none of the empty viewport.
        let size = self
            .eval(
                "(() => { const r = document.body.getBoundingClientRect(); \
                 return [document.documentElement.scrollWidth, Math.ceil(r.bottom + scrollY)]; })()",
            )
            .await;
        let clip = json!({
            "x": 0, "y": 0, "scale": 1,
            "width": size[0].as_f64().unwrap_or(1280.0),
            "height": size[1].as_f64().unwrap_or(900.0),
        });
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "clip": clip, "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("screenshot in base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }
}
