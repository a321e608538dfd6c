//! Redis pub/sub for the wings (rooms, recordings): one dedicated
//! subscriber per instance, following the deployment through failovers by
//! itself, and publishing on the store's connection.
//!
//! redis-rs gives no async `SSUBSCRIBE`, no Sentinel switch listener and
//! resubscription only as an opt-in, so the subscriber is our own: a
//! manager task (`subscriber`) owning one link (`link`, a RESP2 connection
//! in subscribe mode read by `resp`) per node it needs. Wings register a
//! [`Sink`] for the channels under a prefix; the subscriber hands each
//! message to the sink of its channel, and tells it when a subscription is
//! (again) in place, so the wing can catch up on what pub/sub dropped.

mod link;
mod resp;
mod subscriber;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use self::subscriber::Subscriber;
use crate::config::RedisMode;
use crate::store::{RedisStore, StoreResult};

/// Where a wing's channel messages go. Must not block: it runs on the
/// subscriber's reader.
pub trait Sink: Send + Sync + 'static {
    /// A message on a subscribed channel.
    fn message(&self, channel: &[u8], payload: &[u8]);
    /// The channel's subscription is (again) in place: messages published
    /// while it was not were lost to this instance.
    fn subscribed(&self, channel: &str);
}

/// The sinks by channel prefix.
#[derive(Default)]
struct Router {
    routes: RwLock<Vec<(String, Arc<dyn Sink>)>>,
}

impl Router {
    fn sink_of(&self, channel: &[u8]) -> Option<Arc<dyn Sink>> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        routes
            .iter()
            .find(|(prefix, _)| channel.starts_with(prefix.as_bytes()))
            .map(|(_, sink)| sink.clone())
    }
}

impl Sink for Router {
    fn message(&self, channel: &[u8], payload: &[u8]) {
        if let Some(sink) = self.sink_of(channel) {
            sink.message(channel, payload);
        }
    }

    fn subscribed(&self, channel: &str) {
        if let Some(sink) = self.sink_of(channel.as_bytes()) {
            sink.subscribed(channel);
        }
    }
}

struct Inner {
    store: RedisStore,
    router: Arc<Router>,
    subscriber: Subscriber,
    shutdown: broadcast::Sender<()>,
    sharded: bool,
    resubscribes: Arc<AtomicU64>,
}

/// The instance's pub/sub; cheap to clone.
#[derive(Clone)]
pub struct PubSub {
    inner: Arc<Inner>,
}

impl PubSub {
    /// Starts the subscriber on the current runtime. Cluster mode uses
    /// sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`, one slot per channel).
    pub fn start(store: RedisStore) -> Self {
        let sharded = store.settings().mode == RedisMode::Cluster;
        let router = Arc::new(Router::default());
        let (shutdown, _) = broadcast::channel(1);
        let resubscribes = Arc::new(AtomicU64::new(0));
        let subscriber = Subscriber::start(
            store.clone(),
            router.clone(),
            sharded,
            shutdown.subscribe(),
            resubscribes.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                store,
                router,
                subscriber,
                shutdown,
                sharded,
                resubscribes,
            }),
        }
    }

    /// Sends messages on channels starting with `prefix` (after the key
    /// prefix) to `sink`.
    pub fn route(&self, prefix: &str, sink: Arc<dyn Sink>) {
        let full = format!("{}{prefix}", self.key_prefix());
        let mut routes = self
            .inner
            .router
            .routes
            .write()
            .unwrap_or_else(|e| e.into_inner());
        routes.push((full, sink));
    }

    /// Asks for (`true`) or drops (`false`) one subscription to `channel`
    /// (counted: a channel stays while any asker wants it).
    pub async fn want(&self, channel: String, subscribed: bool) {
        self.inner.subscriber.want(channel, subscribed).await;
    }

    /// `PUBLISH` (or `SPUBLISH` in a Cluster) on the store's connection.
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> StoreResult<()> {
        let mut cmd = redis::cmd(self.publish_cmd());
        cmd.arg(channel).arg(payload);
        self.inner.store.command(cmd).await.map(|_| ())
    }

    /// `PUBLISH` or `SPUBLISH`, for scripts that publish themselves.
    pub fn publish_cmd(&self) -> &'static str {
        if self.inner.sharded {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    pub fn sharded(&self) -> bool {
        self.inner.sharded
    }

    /// The configured key prefix, which every channel name starts with.
    pub fn key_prefix(&self) -> &str {
        &self.inner.store.settings().key_prefix
    }

    /// Subscriptions restored after a loss (failover, dropped link, slot
    /// move) since start.
    pub fn resubscribes(&self) -> u64 {
        self.inner.resubscribes.load(Ordering::Relaxed)
    }

    /// Stops the subscriber and its links.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(());
    }
}
