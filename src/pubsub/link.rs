//! One subscriber link: a TCP connection in subscribe mode to one node.
//!
//! It authenticates, sends the manager's (un)subscribe commands one channel
//! at a time, hands messages straight to their sink (reader task) and
//! everything else back in command order, probes a silent connection with
//! PING, and reports a subscription the server dropped (`MOVED`, an
//! unrequested `SUNSUBSCRIBE`) or its own end to the manager.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::resp::{self, Reply};
use super::Sink;
use crate::config::HostPort;

/// A silent link is probed this often...
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// ...and dropped when nothing came back for this long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
pub const LINK_QUEUE: usize = 4096;

/// What a link tells the manager.
pub enum LinkEvent {
    Subscribed(String),
    /// The server dropped the subscription (`SUNSUBSCRIBE`, `MOVED`).
    Lost(HostPort, String),
    /// The link with this id ended.
    Closed(HostPort, u64, String),
}

pub enum LinkCmd {
    Subscribe(String),
    Unsubscribe(String),
}

/// One subscribe-mode connection to one node.
pub struct Link {
    pub id: u64,
    pub node: HostPort,
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    pub sharded: bool,
    pub sink: Arc<dyn Sink>,
    pub events: mpsc::Sender<LinkEvent>,
}

/// A command waiting for its reply, to tell which channel an error is about.
enum Pending {
    Subscribe(String),
    Unsubscribe,
    Ping,
}

impl Link {
    pub async fn run(self, cmds: mpsc::Receiver<LinkCmd>) {
        let reason = match self.serve(cmds).await {
            Ok(()) => "closed".to_string(),
            Err(e) => e,
        };
        let _ = self
            .events
            .send(LinkEvent::Closed(self.node.clone(), self.id, reason))
            .await;
    }

    async fn connect(&self) -> Result<TcpStream, String> {
        let addr = (self.node.host.as_str(), self.node.port);
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timeout".to_string())?
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn serve(&self, mut cmds: mpsc::Receiver<LinkCmd>) -> Result<(), String> {
        let stream = self.connect().await?;
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::with_capacity(16 * 1024, read);
        if let Some(password) = &self.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = &self.username {
                auth.arg(user);
            }
            auth.arg(password);
            write_cmd(&mut write, &auth).await?;
            let reply = tokio::time::timeout(self.connect_timeout, resp::read(&mut read))
                .await
                .map_err(|_| "AUTH timed out".to_string())?
                .map_err(|e| e.to_string())?;
            if let Reply::Error(e) = reply {
                return Err(format!("AUTH refused: {e}"));
            }
        }
        // Replies other than messages come back here, in command order.
        let (control_tx, mut control) = mpsc::channel::<Reply>(LINK_QUEUE);
        let reader = tokio::spawn(read_loop(read, self.sink.clone(), control_tx));
        let _abort = AbortOnDrop(reader);
        let (sub, unsub) = if self.sharded {
            ("SSUBSCRIBE", "SUNSUBSCRIBE")
        } else {
            ("SUBSCRIBE", "UNSUBSCRIBE")
        };
        let mut pending = VecDeque::new();
        // Unsubscribes sent and not yet confirmed, per channel: any other
        // unsubscribe is the server's own (the slot moved).
        let mut leaving: HashMap<String, usize> = HashMap::new();
        let mut probe = tokio::time::interval(PROBE_EVERY);
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => return Ok(()),
                    Some(LinkCmd::Subscribe(channel)) => {
                        write_cmd(&mut write, redis::cmd(sub).arg(&channel)).await?;
                        pending.push_back(Pending::Subscribe(channel));
                    }
                    Some(LinkCmd::Unsubscribe(channel)) => {
                        write_cmd(&mut write, redis::cmd(unsub).arg(&channel)).await?;
                        *leaving.entry(channel).or_default() += 1;
                        pending.push_back(Pending::Unsubscribe);
                    }
                },
                reply = control.recv() => {
                    let reply = reply.ok_or_else(|| "connection closed".to_string())?;
                    heard = Instant::now();
                    self.on_control(reply, &mut pending, &mut leaving).await?;
                }
                _ = probe.tick() => {
                    if heard.elapsed() >= PROBE_TIMEOUT {
                        return Err("no answer to PING".into());
                    }
                    if heard.elapsed() >= PROBE_EVERY {
                        write_cmd(&mut write, &redis::cmd("PING")).await?;
                        pending.push_back(Pending::Ping);
                    }
                }
            }
        }
    }

    async fn on_control(
        &self,
        reply: Reply,
        pending: &mut VecDeque<Pending>,
        leaving: &mut HashMap<String, usize>,
    ) -> Result<(), String> {
        let items = match reply {
            Reply::Error(e) => {
                // The answer to the oldest command in flight.
                if let Some(Pending::Subscribe(channel)) = pending.pop_front() {
                    tracing::debug!(node = %self.node, channel, error = e, "subscribe refused");
                    self.lost(channel).await;
                }
                return Ok(());
            }
            Reply::Simple(_) => {
                pending.pop_front();
                return Ok(());
            }
            Reply::Array(Some(items)) => items,
            _ => return Ok(()),
        };
        let kind = items.first().and_then(Reply::text).unwrap_or_default();
        let channel = items
            .get(1)
            .and_then(Reply::text)
            .unwrap_or_default()
            .to_string();
        match kind {
            "subscribe" | "ssubscribe" => {
                pending.pop_front();
                let _ = self.events.send(LinkEvent::Subscribed(channel)).await;
            }
            "unsubscribe" | "sunsubscribe" => {
                if let Some(n) = leaving.get_mut(&channel) {
                    *n -= 1;
                    if *n == 0 {
                        leaving.remove(&channel);
                    }
                    pending.pop_front();
                } else {
                    // Not asked for: the slot moved away from this node.
                    self.lost(channel).await;
                }
            }
            "pong" => {
                pending.pop_front();
            }
            _ => {}
        }
        Ok(())
    }

    async fn lost(&self, channel: String) {
        let _ = self
            .events
            .send(LinkEvent::Lost(self.node.clone(), channel))
            .await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn write_cmd(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    cmd: &redis::Cmd,
) -> Result<(), String> {
    write
        .write_all(&cmd.get_packed_command())
        .await
        .map_err(|e| e.to_string())
}

/// Reads replies: messages go straight to their sink, the rest to the link.
async fn read_loop(
    mut read: BufReader<tokio::net::tcp::OwnedReadHalf>,
    sink: Arc<dyn Sink>,
    control: mpsc::Sender<Reply>,
) {
    loop {
        let reply = match resp::read(&mut read).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(error = %e, "subscriber read ended");
                return;
            }
        };
        if let Reply::Array(Some(items)) = &reply {
            if let [kind, channel, Reply::Bulk(Some(payload))] = items.as_slice() {
                if matches!(kind.text(), Some("message" | "smessage")) {
                    if let Some(channel) = channel.bytes() {
                        sink.message(channel, payload);
                    }
                    continue;
                }
            }
        }
        if control.send(reply).await.is_err() {
            return;
        }
    }
}
