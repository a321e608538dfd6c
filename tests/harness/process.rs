//! The real `rtc-broker` binary as a child process, for tests that need to
//! signal or kill it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_rtc-broker");

/// The binary with a clean environment, run from an empty directory so
/// it cannot lean on the repo's config folder.
pub fn command(env: &[(&str, &str)], dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A running broker process; killed on drop if still running.
pub struct Running {
    pub child: Child,
    pub port: u16,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Starts the binary; its stderr and stdout lines both go into `log`.
pub fn start(env: &[(&str, &str)], dir: &std::path::Path) -> Running {
    let mut child = command(env, dir)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn rtc-broker");
    let stderr = child.stderr.take().expect("stderr");
    let stdout = child.stdout.take().expect("stdout");
    let mut running = Running {
        child,
        port: 0,
        log: Arc::new(Mutex::new(Vec::new())),
    };
    collect_lines(stderr, running.log.clone());
    collect_lines(stdout, running.log.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let port = running
            .log
            .lock()
            .unwrap()
            .iter()
            .find_map(|line| listening_port(line));
        if let Some(port) = port {
            running.port = port;
            return running;
        }
        // `running` is dropped (and the process killed) if this panics.
        assert!(
            Instant::now() < deadline,
            "broker did not report listening:\n{}",
            running.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Appends every line `from` gives to `sink`, on a thread of its own.
fn collect_lines(from: impl std::io::Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
}

/// The port from the start-up line, in the text or the JSON log format.
fn listening_port(line: &str) -> Option<u16> {
    if !line.contains("rtc-broker listening") {
        return None;
    }
    if let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) {
        return entry["port"].as_u64().and_then(|p| u16::try_from(p).ok());
    }
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("port="))
        .and_then(|p| p.parse().ok())
}
