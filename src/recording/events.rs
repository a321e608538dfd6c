//! Events for a recording's WebSocket (SPEC section 7): merge progress, the
//! result, or the error. The merge runs on the instance that took the stop;
//! the socket may be on any instance, so events go through an
//! [`EventBus`]: [`LocalEvents`] for one instance, [`RedisEvents`] across
//! instances over the shared pub/sub (`rec:{<id>}:events`, subscribed
//! while a socket of the recording is here).
//!
//! Pub/sub drops what is published while a subscription is not in place
//! (just opened, or moving after a failover), so a socket is told
//! [`Heard::Resync`] whenever its subscription is (again) live, and reads
//! the recording's state to catch up on a result it may have missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::domain::Id;
use crate::pubsub::{PubSub, Sink};

/// Events a socket may miss under load before it is told to re-read the
/// status (a lagging receiver loses the oldest ones).
const EVENT_QUEUE: usize = 64;
/// How every recording channel begins (after the key prefix).
const RECORDING_CHANNELS: &str = "rec:{";

/// What a recording's WebSocket is told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum RecordingEvent {
    #[serde(rename = "mergeProgress")]
    MergeProgress { record_id: Id, progress: u8 },
    #[serde(rename = "recordingReady")]
    Ready {
        record_id: Id,
        download_url: String,
        duration_s: f64,
        size_bytes: u64,
    },
    #[serde(rename = "recordingError")]
    Error { record_id: Id, error: String },
}

/// What a socket hears.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    Event(RecordingEvent),
    /// Events may have been missed: read the state.
    Resync,
}

/// A socket's subscription; dropping it releases the channel.
pub struct Subscription {
    pub rx: broadcast::Receiver<Heard>,
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// Carries events to every socket of a recording, wherever it is.
pub trait EventBus: Send + Sync + 'static {
    fn publish(&self, record: &Id, event: RecordingEvent);
    fn subscribe(&self, record: &Id) -> Subscription;
}

/// One broadcast channel per recording with a socket on this instance.
#[derive(Default, Clone)]
pub struct LocalEvents {
    channels: Arc<Mutex<HashMap<Id, broadcast::Sender<Heard>>>>,
}

impl LocalEvents {
    fn lock(&self) -> MutexGuard<'_, HashMap<Id, broadcast::Sender<Heard>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `heard` to this instance's sockets of `record`.
    fn deliver(&self, record: &Id, heard: Heard) {
        if let Some(tx) = self.lock().get(record) {
            let _ = tx.send(heard);
        }
    }

    fn receiver(&self, record: &Id) -> broadcast::Receiver<Heard> {
        let mut channels = self.lock();
        // Channels whose sockets are all gone are dropped here, where
        // sockets come and go, not on every event.
        channels.retain(|_, tx| tx.receiver_count() > 0);
        channels
            .entry(record.clone())
            .or_insert_with(|| broadcast::channel(EVENT_QUEUE).0)
            .subscribe()
    }
}

impl EventBus for LocalEvents {
    fn publish(&self, record: &Id, event: RecordingEvent) {
        self.deliver(record, Heard::Event(event));
    }

    fn subscribe(&self, record: &Id) -> Subscription {
        Subscription {
            rx: self.receiver(record),
            release: None,
        }
    }
}

/// Events across instances over the shared pub/sub.
pub struct RedisEvents {
    pubsub: PubSub,
    local: LocalEvents,
    /// Sockets per recording on this instance (the channel is wanted while > 0).
    sockets: Arc<Mutex<HashMap<Id, usize>>>,
}

impl RedisEvents {
    pub fn new(pubsub: PubSub) -> Self {
        let local = LocalEvents::default();
        pubsub.route(
            RECORDING_CHANNELS,
            Arc::new(RecordingSink {
                prefix: format!("{}{RECORDING_CHANNELS}", pubsub.key_prefix()),
                local: local.clone(),
            }),
        );
        Self {
            pubsub,
            local,
            sockets: Arc::default(),
        }
    }

    fn channel(&self, record: &Id) -> String {
        channel_name(self.pubsub.key_prefix(), record)
    }
}

fn channel_name(key_prefix: &str, record: &Id) -> String {
    format!("{key_prefix}{RECORDING_CHANNELS}{record}}}:events")
}

impl EventBus for RedisEvents {
    fn publish(&self, record: &Id, event: RecordingEvent) {
        let Ok(payload) = serde_json::to_vec(&event) else {
            return;
        };
        let (pubsub, local, channel) = (
            self.pubsub.clone(),
            self.local.clone(),
            self.channel(record),
        );
        let record = record.clone();
        tokio::spawn(async move {
            if let Err(e) = pubsub.publish(&channel, &payload).await {
                // Redis is away: this instance's sockets hear it at least.
                tracing::debug!(error = %e, "recording event not published; delivered locally");
                local.deliver(&record, Heard::Event(event));
            }
        });
    }

    fn subscribe(&self, record: &Id) -> Subscription {
        let rx = self.local.receiver(record);
        let first = {
            let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
            let count = sockets.entry(record.clone()).or_insert(0);
            *count += 1;
            *count == 1
        };
        let channel = self.channel(record);
        if first {
            let (pubsub, channel) = (self.pubsub.clone(), channel.clone());
            tokio::spawn(async move { pubsub.want(channel, true).await });
        }
        let (pubsub, sockets, record) = (self.pubsub.clone(), self.sockets.clone(), record.clone());
        let release = move || {
            let last = {
                let mut sockets = sockets.lock().unwrap_or_else(|e| e.into_inner());
                let count = sockets.get_mut(&record).map(|c| {
                    *c -= 1;
                    *c
                });
                if count == Some(0) {
                    sockets.remove(&record);
                }
                count == Some(0)
            };
            if last {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move { pubsub.want(channel, false).await });
                }
            }
        };
        Subscription {
            rx,
            release: Some(Box::new(release)),
        }
    }
}

/// Recording channel messages to this instance's sockets.
struct RecordingSink {
    /// `<key prefix>rec:{`
    prefix: String,
    local: LocalEvents,
}

impl RecordingSink {
    fn record_of(&self, channel: &[u8]) -> Option<Id> {
        let rest = channel.strip_prefix(self.prefix.as_bytes())?;
        let rest = rest.strip_suffix(b"}:events")?;
        Id::parse(std::str::from_utf8(rest).ok()?).ok()
    }
}

impl Sink for RecordingSink {
    fn message(&self, channel: &[u8], payload: &[u8]) {
        let Some(record) = self.record_of(channel) else {
            return;
        };
        match serde_json::from_slice::<RecordingEvent>(payload) {
            Ok(event) => self.local.deliver(&record, Heard::Event(event)),
            Err(_) => tracing::warn!(record_id = %record, "undecodable recording event; ignored"),
        }
    }

    fn subscribed(&self, channel: &str) {
        if let Some(record) = self.record_of(channel.as_bytes()) {
            self.local.deliver(&record, Heard::Resync);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_contract_names() {
        let id = Id::parse("r1").unwrap();
        let ready = RecordingEvent::Ready {
            record_id: id.clone(),
            download_url: "/recordings/download/k".into(),
            duration_s: 5.0,
            size_bytes: 10,
        };
        let json = serde_json::to_value(&ready).unwrap();
        assert_eq!(json["event"], "recordingReady");
        assert_eq!(json["download_url"], "/recordings/download/k");
        let progress = RecordingEvent::MergeProgress {
            record_id: id,
            progress: 40,
        };
        assert_eq!(
            serde_json::to_value(&progress).unwrap()["event"],
            "mergeProgress"
        );
    }

    #[tokio::test]
    async fn only_subscribed_recordings_hear_their_events() {
        let events = LocalEvents::default();
        let (a, b) = (Id::parse("a").unwrap(), Id::parse("b").unwrap());
        let mut sub = events.subscribe(&a);
        let error = |id: &Id| RecordingEvent::Error {
            record_id: id.clone(),
            error: "no_chunks".into(),
        };
        events.publish(&b, error(&b));
        events.publish(&a, error(&a));
        assert_eq!(sub.rx.recv().await.unwrap(), Heard::Event(error(&a)));
        assert!(sub.rx.try_recv().is_err());
    }

    #[test]
    fn channels_parse_back_to_their_recording() {
        let sink = RecordingSink {
            prefix: format!("p:{RECORDING_CHANNELS}"),
            local: LocalEvents::default(),
        };
        let id = Id::parse("r-1").unwrap();
        let channel = channel_name("p:", &id);
        assert_eq!(channel, "p:rec:{r-1}:events");
        assert_eq!(sink.record_of(channel.as_bytes()), Some(id));
        assert_eq!(sink.record_of(b"p:rec:{../x}:events"), None);
        assert_eq!(sink.record_of(b"p:room:{r}:events"), None);
    }
}
