//! The broker binary as a child process for the bench tools: started on a
//! free loopback port with extra environment, killed when dropped.

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};

// The flags both bench tools take to start the broker and label results
// (a plain comment: clap would take a doc comment as the tools' about text).
#[derive(clap::Args)]
pub struct BrokerArgs {
    /// The broker binary to start.
    #[arg(long, default_value = "target/release/rtc-broker")]
    pub broker_bin: String,
    /// Extra environment for the broker, KEY=VALUE (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Label printed with the results (e.g. memory, single, cluster).
    #[arg(long, default_value = "memory")]
    pub label: String,
}

pub struct Broker(pub Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin` with `env` (KEY=VALUE pairs); returns it, its port and the
/// rest of its log, which the caller must keep draining.
pub fn start(bin: &Path, env: &[String]) -> (Broker, u16, Lines<BufReader<ChildStderr>>) {
    let mut cmd = Command::new(bin);
    cmd.env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("RUST_LOG", "warn,rtc_broker::startup=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for pair in env {
        let (k, v) = pair.split_once('=').expect("--env takes KEY=VALUE");
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .expect("start the broker binary (build it with --release)");
    let stderr = child.stderr.take().expect("stderr");
    let broker = Broker(child);
    let mut lines = BufReader::new(stderr).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("broker exited before listening")
            .expect("read broker log");
        if let Some(port) = line
            .contains("rtc-broker listening")
            .then(|| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix("port="))
            })
            .flatten()
        {
            break port.parse().expect("port");
        }
    };
    (broker, port, lines)
}
