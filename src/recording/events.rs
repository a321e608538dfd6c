//! Events for a recording's WebSocket (SPEC section 7): merge progress, the
//! result, or the error. The merge runs on the instance that took the stop;
//! the socket may be on any instance, so events go through an
//! [`EventBus`]. [`LocalEvents`] delivers to the sockets of this instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::domain::Id;

/// Events a socket may miss under load before it is told to re-read the
/// status (a lagging receiver loses the oldest ones).
const EVENT_QUEUE: usize = 64;

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

/// Carries events to every socket of a recording, wherever it is.
pub trait EventBus: Send + Sync + 'static {
    fn publish(&self, record: &Id, event: RecordingEvent);
    fn subscribe(&self, record: &Id) -> broadcast::Receiver<RecordingEvent>;
}

/// One broadcast channel per recording with a socket on this instance.
#[derive(Default, Clone)]
pub struct LocalEvents {
    channels: Arc<Mutex<HashMap<Id, broadcast::Sender<RecordingEvent>>>>,
}

impl LocalEvents {
    fn lock(&self) -> MutexGuard<'_, HashMap<Id, broadcast::Sender<RecordingEvent>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EventBus for LocalEvents {
    fn publish(&self, record: &Id, event: RecordingEvent) {
        let mut channels = self.lock();
        // Channels whose sockets are all gone are dropped here.
        channels.retain(|_, tx| tx.receiver_count() > 0);
        if let Some(tx) = channels.get(record) {
            let _ = tx.send(event);
        }
    }

    fn subscribe(&self, record: &Id) -> broadcast::Receiver<RecordingEvent> {
        self.lock()
            .entry(record.clone())
            .or_insert_with(|| broadcast::channel(EVENT_QUEUE).0)
            .subscribe()
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
        let mut rx = events.subscribe(&a);
        let error = |id: &Id| RecordingEvent::Error {
            record_id: id.clone(),
            error: "no_chunks".into(),
        };
        events.publish(&b, error(&b));
        events.publish(&a, error(&a));
        assert_eq!(rx.recv().await.unwrap(), error(&a));
        assert!(rx.try_recv().is_err());
    }
}
