//! The instance's dedicated subscriber: subscribed to exactly the channels
//! the wings ask for (a room's while it has local members, a recording's
//! while a socket of it is here), following the deployment through
//! failovers by itself.
//!
//! A manager task owns the wanted channels and one link (a TCP connection
//! in subscribe mode) per node it needs: the single node, the Sentinel
//! master the store follows, or, in a Cluster, the master of each channel's
//! slot (one `SSUBSCRIBE` per channel, so channels of different slots never
//! meet in one command). A link that drops, stops answering its 1-second
//! PING probe, gets `MOVED`, or is told `SUNSUBSCRIBE` by the server (slot
//! moved) gives its channels back; the manager re-resolves (the store's
//! current master, `CLUSTER SLOTS`) and subscribes them again with capped
//! backoff. Each confirmed subscription is reported to its sink (a room
//! then reads from history what pub/sub dropped meanwhile).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{ConnectionAddr, Value};
use tokio::sync::{broadcast, mpsc};

use super::link::{Link, LinkCmd, LinkEvent, LINK_QUEUE};
use super::Sink;
use crate::config::{HostPort, RedisMode};
use crate::store::RedisStore;

/// How often the manager checks the master and retries placements.
const TICK: Duration = Duration::from_millis(100);
const WANT_QUEUE: usize = 1024;

enum Want {
    Subscribe(String),
    Unsubscribe(String),
}

/// Handle to the manager task.
pub struct Subscriber {
    wants: mpsc::Sender<Want>,
}

impl Subscriber {
    pub fn start(
        store: RedisStore,
        sink: Arc<dyn Sink>,
        sharded: bool,
        shutdown: broadcast::Receiver<()>,
        resubscribes: Arc<AtomicU64>,
    ) -> Self {
        let (wants, rx) = mpsc::channel(WANT_QUEUE);
        let (events_tx, events) = mpsc::channel(LINK_QUEUE);
        let manager = Manager {
            store,
            sink,
            sharded,
            confirmed: HashSet::new(),
            resubscribes,
            wanted: HashMap::new(),
            placed: HashMap::new(),
            links: HashMap::new(),
            next_link: 0,
            slots: Vec::new(),
            events_tx,
            unplaced_since: None,
            backoff: Duration::from_millis(50),
            retry_at: Instant::now(),
        };
        tokio::spawn(manager.run(rx, events, shutdown));
        Self { wants }
    }

    /// Asks for (`true`) or drops (`false`) one subscription to `channel`.
    pub async fn want(&self, channel: String, subscribed: bool) {
        let want = if subscribed {
            Want::Subscribe(channel)
        } else {
            Want::Unsubscribe(channel)
        };
        let _ = self.wants.send(want).await;
    }
}

struct Manager {
    store: RedisStore,
    sink: Arc<dyn Sink>,
    sharded: bool,
    /// Channel -> subscriptions asked for it.
    wanted: HashMap<String, usize>,
    /// Wanted channels the server confirmed at least once.
    confirmed: HashSet<String>,
    /// Confirmations of channels confirmed before: subscriptions restored
    /// after a loss (metrics).
    resubscribes: Arc<AtomicU64>,
    /// Channel -> the link it was sent to.
    placed: HashMap<String, HostPort>,
    /// Node -> (link id, its command queue).
    links: HashMap<HostPort, (u64, mpsc::Sender<LinkCmd>)>,
    next_link: u64,
    /// Cluster: (first slot, last slot, master).
    slots: Vec<(u16, u16, HostPort)>,
    events_tx: mpsc::Sender<LinkEvent>,
    /// Since when some wanted channel has no link (for the log).
    unplaced_since: Option<Instant>,
    backoff: Duration,
    retry_at: Instant,
}

impl Manager {
    async fn run(
        mut self,
        mut wants: mpsc::Receiver<Want>,
        mut events: mpsc::Receiver<LinkEvent>,
        mut shutdown: broadcast::Receiver<()>,
    ) {
        if self.sharded {
            self.refresh_slots().await;
        }
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = shutdown.recv() => return,
                want = wants.recv() => match want {
                    Some(Want::Subscribe(channel)) => {
                        *self.wanted.entry(channel).or_insert(0) += 1;
                    }
                    Some(Want::Unsubscribe(channel)) => {
                        // Counted: a retiring room task's unsubscribe may
                        // come after its successor's subscribe.
                        let Some(count) = self.wanted.get_mut(&channel) else {
                            continue;
                        };
                        *count -= 1;
                        if *count > 0 {
                            continue;
                        }
                        self.wanted.remove(&channel);
                        self.confirmed.remove(&channel);
                        if let Some(node) = self.placed.remove(&channel) {
                            if let Some((_, link)) = self.links.get(&node) {
                                let _ = link.try_send(LinkCmd::Unsubscribe(channel));
                            }
                        }
                    }
                    None => return,
                },
                Some(event) = events.recv() => self.on_event(event),
                _ = tick.tick() => self.follow_master(),
            }
            self.place_all().await;
        }
    }

    fn on_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Subscribed(channel) => {
                self.backoff = Duration::from_millis(50);
                if self.wanted.contains_key(&channel) {
                    if !self.confirmed.insert(channel.clone()) {
                        self.resubscribes.fetch_add(1, Ordering::Relaxed);
                    }
                    self.sink.subscribed(&channel);
                }
            }
            LinkEvent::Lost(node, channel) => {
                tracing::warn!(%node, channel, "subscription dropped by the server; resubscribing");
                if self.placed.get(&channel) == Some(&node) {
                    self.placed.remove(&channel);
                }
                self.slots.clear();
            }
            LinkEvent::Closed(node, id, reason) => {
                if self
                    .links
                    .get(&node)
                    .is_some_and(|(current, _)| *current == id)
                {
                    self.links.remove(&node);
                    let had = self.placed.values().filter(|n| **n == node).count();
                    if had > 0 {
                        tracing::warn!(%node, reason, channels = had, "subscriber connection lost; resubscribing");
                    }
                }
                self.placed.retain(|_, n| *n != node);
                self.slots.clear();
                self.delay_retry();
            }
        }
    }

    /// The next placement waits out the current backoff, which doubles.
    fn delay_retry(&mut self) {
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
    }

    /// Sentinel: a link to anything but the current master is stale (a
    /// demoted master says nothing); drop it so its rooms move over.
    fn follow_master(&mut self) {
        if self.store.settings().mode != RedisMode::Sentinel {
            return;
        }
        let Some(master) = self.store.master() else {
            return;
        };
        let stale: Vec<HostPort> = self
            .links
            .keys()
            .filter(|n| **n != master)
            .cloned()
            .collect();
        for node in stale {
            tracing::warn!(old = %node, new = %master, "Redis master changed: moving subscriptions");
            self.links.remove(&node);
            self.placed.retain(|_, n| *n != node);
        }
    }

    /// Sends every wanted, unplaced channel to the node serving it.
    async fn place_all(&mut self) {
        let unplaced: Vec<String> = self
            .wanted
            .keys()
            .filter(|c| !self.placed.contains_key(*c))
            .cloned()
            .collect();
        if unplaced.is_empty() {
            if let Some(since) = self.unplaced_since.take() {
                tracing::info!(
                    after_ms = since.elapsed().as_millis() as u64,
                    "subscriptions restored"
                );
            }
            return;
        }
        self.unplaced_since.get_or_insert_with(Instant::now);
        if Instant::now() < self.retry_at {
            return;
        }
        if self.sharded && self.slots.is_empty() {
            self.refresh_slots().await;
        }
        let mut failed = false;
        for channel in unplaced {
            let Some(node) = self.route(&channel) else {
                failed = true;
                continue;
            };
            let link = match self.links.get(&node) {
                Some((_, link)) => link.clone(),
                None => match self.open_link(&node) {
                    Some(link) => link,
                    None => {
                        failed = true;
                        continue;
                    }
                },
            };
            if link.try_send(LinkCmd::Subscribe(channel.clone())).is_ok() {
                self.placed.insert(channel, node);
            } else {
                failed = true;
            }
        }
        if failed {
            self.delay_retry();
        }
    }

    /// The node that must take `channel`'s subscription right now.
    fn route(&self, channel: &str) -> Option<HostPort> {
        match self.store.settings().mode {
            RedisMode::Sentinel => self.store.master(),
            RedisMode::Single => match self.store.connection_info(None).ok()?.addr() {
                ConnectionAddr::Tcp(host, port) => Some(HostPort {
                    host: host.clone(),
                    port: *port,
                }),
                _ => None,
            },
            RedisMode::Cluster => {
                let slot = slot_of(channel);
                self.slots
                    .iter()
                    .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
                    .map(|(_, _, node)| node.clone())
            }
        }
    }

    fn open_link(&mut self, node: &HostPort) -> Option<mpsc::Sender<LinkCmd>> {
        let mode = self.store.settings().mode;
        let info = self
            .store
            .connection_info((mode != RedisMode::Single).then_some(node))
            .ok()?;
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        self.next_link += 1;
        let link = Link {
            id: self.next_link,
            node: node.clone(),
            username: info.redis_settings().username().map(str::to_string),
            password: info.redis_settings().password().map(str::to_string),
            connect_timeout: self.store.settings().connect_timeout(),
            sharded: self.sharded,
            sink: self.sink.clone(),
            events: self.events_tx.clone(),
        };
        tokio::spawn(link.run(rx));
        self.links
            .insert(node.clone(), (self.next_link, tx.clone()));
        Some(tx)
    }

    async fn refresh_slots(&mut self) {
        match self
            .store
            .command(redis::cmd("CLUSTER").arg("SLOTS").clone())
            .await
        {
            Ok(reply) => self.slots = parse_slots(&reply),
            Err(e) => tracing::debug!(error = %e, "CLUSTER SLOTS failed"),
        }
    }
}

/// The cluster slot of a channel name (its hash tag when it has one).
fn slot_of(channel: &str) -> u16 {
    let bytes = channel.as_bytes();
    let tagged = bytes
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16384
}

/// `CLUSTER SLOTS` -> (first, last, master) for every range.
fn parse_slots(reply: &Value) -> Vec<(u16, u16, HostPort)> {
    let Value::Array(ranges) = reply else {
        return Vec::new();
    };
    ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(parts) = range else {
                return None;
            };
            let lo = redis::from_redis_value_ref::<u16>(parts.first()?).ok()?;
            let hi = redis::from_redis_value_ref::<u16>(parts.get(1)?).ok()?;
            let Value::Array(master) = parts.get(2)? else {
                return None;
            };
            let host = redis::from_redis_value_ref::<String>(master.first()?).ok()?;
            let port = redis::from_redis_value_ref::<u16>(master.get(1)?).ok()?;
            (!host.is_empty()).then_some((lo, hi, HostPort { host, port }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_hash_tags() {
        // Known values from CLUSTER KEYSLOT.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("room:{foo}:events"), 12182);
        assert_eq!(slot_of("{}x"), slot_of("{}x"));
    }
}
