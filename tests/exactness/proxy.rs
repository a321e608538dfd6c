//! A loopback TCP proxy in front of a real Redis that the test controls:
//! armed with a command name, it forwards the next request carrying it to
//! Redis and then cuts the connection instead of forwarding the reply. The
//! command has run; the client never hears so — exactly the moment a
//! dropped connection makes a retry dangerous.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Control {
    /// Cut the connection that next sends a request containing this.
    armed: Mutex<Option<Vec<u8>>>,
    /// How many replies were swallowed.
    cuts: std::sync::atomic::AtomicUsize,
}

pub struct Proxy {
    pub port: u16,
    control: Arc<Control>,
}

impl Proxy {
    /// Listens on a random loopback port and forwards to `redis_port`.
    pub async fn start(redis_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let control = Arc::new(Control::default());
        let ctl = control.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", redis_port)).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, ctl.clone()));
            }
        });
        Self { port, control }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The next request containing `command` runs, and its reply is lost
    /// with the connection.
    pub fn cut_after(&self, command: &str) {
        *self.control.armed.lock().unwrap() = Some(command.as_bytes().to_vec());
    }

    /// Replies swallowed so far.
    pub fn cuts(&self) -> usize {
        self.control.cuts.load(Ordering::SeqCst)
    }
}

async fn relay(client: TcpStream, server: TcpStream, control: Arc<Control>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_rx, client_tx) = client.into_split();
    let (server_rx, server_tx) = server.into_split();
    let cut = Arc::new(AtomicBool::new(false));
    // Client to Redis: mark the connection when the armed command passes.
    let (ctl, mark) = (control.clone(), cut.clone());
    let up = tokio::spawn(pump(client_rx, server_tx, move |chunk| {
        let mut armed = ctl.armed.lock().unwrap();
        let hit = armed
            .as_ref()
            .is_some_and(|p| chunk.windows(p.len()).any(|w| w == p.as_slice()));
        if hit {
            *armed = None;
            mark.store(true, Ordering::SeqCst);
        }
        true
    }));
    // Redis to client: on a marked connection, swallow the reply and hang up.
    pump(server_rx, client_tx, |_| {
        let swallow = cut.load(Ordering::SeqCst);
        if swallow {
            control.cuts.fetch_add(1, Ordering::SeqCst);
        }
        !swallow
    })
    .await;
    up.abort();
}

/// Copies chunks from `from` to `to` while `forward` says so; returning
/// drops both halves, so the peer sees the connection die.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut forward: impl FnMut(&[u8]) -> bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !forward(&buf[..n]) || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
