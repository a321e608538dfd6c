//! `GET /metrics`: Prometheus text, the families of SPEC section 8 (see
//! `crate::metrics` for how they are gathered).

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::RouteTable;
use crate::metrics::{HttpMetrics, Snapshot};
use crate::state::AppState;
use crate::store::StorageKind;

pub(super) fn configure(t: &mut RouteTable) {
    t.at("/metrics").route(Method::GET, metrics);
}

async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let mut s = Snapshot::default();
    if let Some(http) = req.app_data::<HttpMetrics>() {
        s.extend(http.families());
    }
    storage(&mut s, &state);
    rooms(&mut s, &state);
    recordings(&mut s, &state);
    access(&mut s, &state);
    HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(s.render())
}

fn storage(s: &mut Snapshot, state: &AppState) {
    let status = state.store.status();
    let in_fallback = state.redis.is_some() && status.storage == StorageKind::Memory;
    s.gauge(
        "rtc_storage_fallback_active",
        "1 while Redis is configured but the instance serves from memory.",
        i64::from(in_fallback),
    );
    s.gauge(
        "rtc_redis_connected",
        "1 while the Redis connection is up (0 without Redis).",
        i64::from(state.redis.is_some() && status.connected),
    );
    let totals = status.fallback_totals;
    s.counters(
        "rtc_fallback_transitions_total",
        "Switches between Redis and the memory fallback, by the side switched to.",
        "to",
        &[("memory", totals.to_memory), ("redis", totals.to_redis)],
    );
    let r = totals.replayed;
    s.counters(
        "rtc_fallback_replayed_total",
        "Outage writes replayed into Redis, by kind of record.",
        "kind",
        &[
            ("tokens", r.tokens),
            ("sessions", r.sessions),
            ("revocations", r.revocations),
            ("counters", r.counters),
            ("recordings", r.recordings),
        ],
    );
    if let Some(redis) = &state.redis {
        s.extend(redis.metric_families());
    }
    let resubscribes = state.pubsub.as_ref().map_or(0, |p| p.resubscribes());
    s.counter(
        "rtc_pubsub_resubscribes_total",
        "Pub/sub subscriptions restored after a loss (failover, dropped link, slot move).",
        resubscribes,
    );
}

fn rooms(s: &mut Snapshot, state: &AppState) {
    let rooms = state.rooms.stats();
    let recordings = state.recordings.stats();
    s.gauges(
        "rtc_websocket_connections",
        "Open WebSockets on this instance, by kind.",
        "kind",
        &[
            ("room", rooms.connections as i64),
            ("recording", recordings.sockets as i64),
        ],
    );
    s.gauge(
        "rtc_rooms",
        "Rooms with members on this instance.",
        rooms.rooms as i64,
    );
    s.counter(
        "rtc_room_messages_fanned_out_total",
        "Room frames written to local sockets.",
        rooms.fanned_out,
    );
    s.gauge(
        "rtc_room_outage_buffer",
        "Room messages held for Redis in the outage buffer.",
        rooms.outage_buffered as i64,
    );
    s.counter(
        "rtc_room_outage_refused_total",
        "Room publishes refused because the outage buffer was full.",
        rooms.outage_refused,
    );
    s.counters(
        "rtc_room_socket_closes_total",
        "Room sockets ended, by why: the client, or the broker's close.",
        "reason",
        &state.rooms.close_counts(),
    );
    s.gauge(
        "rtc_room_unsettled_messages",
        "Committed room messages kept until their Redis master has shown it kept them.",
        rooms.unsettled as i64,
    );
}

fn recordings(s: &mut Snapshot, state: &AppState) {
    let r = state.recordings.stats();
    s.counter(
        "rtc_recording_chunks_stored_total",
        "Recording chunks stored (acknowledged).",
        r.chunks_stored,
    );
    s.counter(
        "rtc_recording_chunk_bytes_total",
        "Bytes of recording chunks stored.",
        r.bytes_stored,
    );
    s.counter(
        "rtc_recording_index_collisions_repaired_total",
        "Chunk indices found taken (the counter went backwards) and repaired.",
        r.index_collisions_repaired,
    );
    s.counters(
        "rtc_recording_merges_total",
        "Merges finished, by outcome.",
        "outcome",
        &[("ready", r.merges_ready), ("failed", r.merges_failed)],
    );
    s.extend(state.recordings.metric_families());
}

fn access(s: &mut Snapshot, state: &AppState) {
    s.counters(
        "rtc_rate_limited_total",
        "Requests refused 429 rate_limited, by policy.",
        "policy",
        &state.rate_limit.refused(),
    );
    s.gauge(
        "rtc_revocations_known",
        "Live token revocations in this instance's local copy.",
        state.tokens.revocations().len() as i64,
    );
}
