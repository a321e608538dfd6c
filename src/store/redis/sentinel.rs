//! Following the master behind Redis Sentinel.
//!
//! redis-rs resolves the master only when it connects and has no
//! `+switch-master` listener, so the broker does both itself: it asks the
//! sentinels which node is master (on start, on errors that suggest a
//! switch, and periodically, since an event can be missed), confirms it with
//! `ROLE`, and listens for `+switch-master` on every sentinel so that even an
//! idle instance follows a failover at once. It also listens for
//! `+failover-state-send-slaveof-noone`, the moment a replica is about to be
//! promoted, to stop writing to the old master before it can acknowledge
//! writes the new master will never receive.

use std::time::Duration;

use futures_util::StreamExt as _;
use redis::{ConnectionAddr, IntoConnectionInfo};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::connection::node_info;
use crate::config::{HostPort, RedisSettings};

/// Asks the sentinels, in order, for the current master's address.
pub async fn ask_sentinels(settings: &RedisSettings) -> Result<HostPort, String> {
    let mut errors = Vec::new();
    for sentinel in &settings.sentinels {
        match ask_one(settings, sentinel).await {
            Ok(master) => return Ok(master),
            Err(e) => errors.push(format!("{sentinel}: {e}")),
        }
    }
    Err(format!(
        "no sentinel named a master ({})",
        errors.join("; ")
    ))
}

async fn sentinel_connection(
    settings: &RedisSettings,
    sentinel: &HostPort,
) -> Result<redis::aio::MultiplexedConnection, String> {
    // Sentinels take neither the data password nor a db number.
    let info = ConnectionAddr::Tcp(sentinel.host.clone(), sentinel.port)
        .into_connection_info()
        .map_err(|e| e.to_string())?;
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    timeout(
        settings.connect_timeout(),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| "connect timeout".to_string())?
    .map_err(|e| e.to_string())
}

async fn ask_one(settings: &RedisSettings, sentinel: &HostPort) -> Result<HostPort, String> {
    let mut conn = sentinel_connection(settings, sentinel).await?;
    let answer: Option<(String, u16)> = timeout(
        settings.command_timeout(),
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&settings.sentinel_name)
            .query_async(&mut conn),
    )
    .await
    .map_err(|_| "command timeout".to_string())?
    .map_err(|e| e.to_string())?;
    let (host, port) = answer
        .ok_or_else(|| format!("sentinel does not know master {:?}", settings.sentinel_name))?;
    Ok(HostPort { host, port })
}

/// The node's replication role (`master`, `slave`, ...), asked over a
/// short-lived connection so a hung node cannot stall the caller.
pub async fn role_of(settings: &RedisSettings, node: &HostPort) -> Result<String, String> {
    let info = node_info(settings, node).map_err(|e| e.to_string())?;
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let mut conn = timeout(
        settings.connect_timeout(),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| "connect timeout".to_string())?
    .map_err(|e| e.to_string())?;
    let role: Vec<redis::Value> = timeout(
        settings.command_timeout(),
        redis::cmd("ROLE").query_async(&mut conn),
    )
    .await
    .map_err(|_| "command timeout".to_string())?
    .map_err(|e| e.to_string())?;
    match role.first() {
        Some(v) => redis::from_redis_value_ref::<String>(v).map_err(|e| e.to_string()),
        None => Err("empty ROLE reply".into()),
    }
}

/// What a sentinel told us about our master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentinelEvent {
    /// The failover leader is about to promote a replica
    /// (`+failover-state-send-slaveof-noone`): from now on the old master
    /// may acknowledge writes the new one will never see.
    Promoting,
    /// The failover is done: this is the new master (`+switch-master`).
    Switched(HostPort),
}

/// Channels the listeners subscribe to on every sentinel.
const CHANNELS: [&str; 2] = ["+switch-master", "+failover-state-send-slaveof-noone"];

/// Parses an event for our master, or `None` for another master's events.
fn parse_event(channel: &str, payload: &str, master_name: &str) -> Option<SentinelEvent> {
    match channel {
        "+switch-master" => parse_switch(payload, master_name).map(SentinelEvent::Switched),
        // `<type> <name> <ip> <port> @ <master-name> <master-ip> <master-port>`
        _ => {
            let mut after_at = payload.split(" @ ").nth(1)?.split_whitespace();
            (after_at.next()? == master_name).then_some(SentinelEvent::Promoting)
        }
    }
}

/// Parses a `+switch-master` payload: `<name> <old-ip> <old-port> <new-ip> <new-port>`.
fn parse_switch(payload: &str, master_name: &str) -> Option<HostPort> {
    let parts: Vec<&str> = payload.split_whitespace().collect();
    match parts.as_slice() {
        [name, _, _, host, port] if *name == master_name => Some(HostPort {
            host: (*host).to_string(),
            port: port.parse().ok()?,
        }),
        _ => None,
    }
}

/// Subscribes to the failover events on every sentinel and forwards those
/// about our master. Tasks end when the receiver is dropped.
pub fn spawn_listeners(settings: &RedisSettings, tx: mpsc::UnboundedSender<SentinelEvent>) {
    for sentinel in settings.sentinels.clone() {
        let settings = settings.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            while !tx.is_closed() {
                match listen_once(&settings, &sentinel, &tx).await {
                    Ok(()) => backoff = Duration::from_millis(50),
                    Err(e) => {
                        tracing::debug!(%sentinel, error = %e, "sentinel subscription lost; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = tx.closed() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        });
    }
}

async fn listen_once(
    settings: &RedisSettings,
    sentinel: &HostPort,
    tx: &mpsc::UnboundedSender<SentinelEvent>,
) -> Result<(), String> {
    let info = ConnectionAddr::Tcp(sentinel.host.clone(), sentinel.port)
        .into_connection_info()
        .map_err(|e| e.to_string())?;
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let mut pubsub = timeout(settings.connect_timeout(), client.get_async_pubsub())
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
    pubsub
        .subscribe(&CHANNELS[..])
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = pubsub.on_message();
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { return Err("subscription closed".into()) };
                let payload: String = msg.get_payload().map_err(|e| e.to_string())?;
                let channel = msg.get_channel_name();
                if let Some(event) = parse_event(channel, &payload, &settings.sentinel_name) {
                    tracing::info!(%sentinel, channel, ?event, "sentinel failover event");
                    if tx.send(event).is_err() {
                        return Ok(());
                    }
                }
            }
            _ = tx.closed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_switch_master_for_our_name_only() {
        let m = parse_switch("mymaster 127.0.0.1 6379 127.0.0.1 6380", "mymaster").unwrap();
        assert_eq!(m.to_string(), "127.0.0.1:6380");
        assert!(parse_switch("other 1.1.1.1 1 2.2.2.2 2", "mymaster").is_none());
        assert!(parse_switch("mymaster garbage", "mymaster").is_none());
    }

    #[test]
    fn parses_promotion_events_for_our_master_only() {
        let payload = "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379";
        assert_eq!(
            parse_event("+failover-state-send-slaveof-noone", payload, "mymaster"),
            Some(SentinelEvent::Promoting)
        );
        assert_eq!(
            parse_event("+failover-state-send-slaveof-noone", payload, "other"),
            None
        );
        assert_eq!(
            parse_event("+switch-master", "mymaster 1.1.1.1 1 2.2.2.2 2", "mymaster"),
            Some(SentinelEvent::Switched(HostPort {
                host: "2.2.2.2".into(),
                port: 2
            }))
        );
    }
}
