//! `GET /metrics`: Prometheus text with the families of SPEC section 8,
//! route templates as labels (never paths or ids), on every backend.

use std::collections::HashMap;

use serde_json::json;

use crate::helpers::{spawn_app, Backend, TestApp};

/// Samples of the exposition: `name{labels}` -> value. Checks the format
/// on the way: every sample's family has HELP and TYPE lines first.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut described = std::collections::HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            described.insert(rest.split_whitespace().next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| described.contains(*f))
            .unwrap_or(name);
        assert!(described.contains(family), "{name} has no TYPE line");
        samples.insert(series.to_string(), value);
    }
    samples
}

async fn scrape(app: &TestApp) -> (String, HashMap<String, f64>) {
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = res.text().await.unwrap();
    let samples = parse(&text);
    (text, samples)
}

async fn metrics_describe_the_instance(backend: Backend) {
    let app = spawn_app(backend).await;
    app.issue("metrics-s1", 60).await;
    let (status, _) = app.get("/api/voice/token/metrics-s1").await;
    assert_eq!(status, 200);
    let (status, _) = app.get("/api/sessions/a-secret-looking-id-42").await;
    assert_eq!(status, 404);
    let (status, _) = app.get("/no/such/path/xyz-77").await;
    assert_eq!(status, 404);
    let (status, _) = app
        .post_json("/api/sessions", &json!({"session_id": "metrics-room"}))
        .await;
    assert_eq!(status, 201);

    let (text, samples) = scrape(&app).await;
    let requests = |method: &str, route: &str, status: u16| {
        samples
            .get(&format!(
                r#"rtc_http_requests_total{{method="{method}",route="{route}",status="{status}"}}"#
            ))
            .copied()
            .unwrap_or(0.0)
    };
    assert_eq!(requests("POST", "/api/voice/token", 200), 1.0, "{text}");
    assert_eq!(requests("GET", "/api/voice/token/{session_id}", 200), 1.0);
    assert_eq!(requests("GET", "/api/sessions/{id}", 404), 1.0);
    assert_eq!(requests("GET", "unmatched", 404), 1.0);
    assert!(
        !text.contains("a-secret-looking-id-42") && !text.contains("xyz-77"),
        "ids in labels"
    );
    assert!(!text.contains("metrics-room") && !text.contains("metrics-s1"));
    assert!(samples.contains_key(
        r#"rtc_http_request_duration_seconds_count{method="POST",route="/api/voice/token"}"#
    ));
    for family in [
        "rtc_storage_fallback_active",
        "rtc_redis_connected",
        r#"rtc_fallback_transitions_total{to="memory"}"#,
        r#"rtc_fallback_replayed_total{kind="tokens"}"#,
        r#"rtc_websocket_connections{kind="room"}"#,
        r#"rtc_websocket_connections{kind="recording"}"#,
        "rtc_rooms",
        "rtc_room_messages_fanned_out_total",
        "rtc_pubsub_resubscribes_total",
        "rtc_room_outage_buffer",
        "rtc_room_outage_refused_total",
        "rtc_room_unsettled_messages",
        r#"rtc_room_socket_closes_total{reason="kicked"}"#,
        "rtc_recording_chunks_stored_total",
        "rtc_recording_chunk_bytes_total",
        "rtc_recording_index_collisions_repaired_total",
        r#"rtc_recording_merges_total{outcome="ready"}"#,
        "rtc_recording_merge_duration_seconds_count",
        r#"rtc_rate_limited_total{policy="tokens_per_ip"}"#,
        r#"rtc_rate_limited_total{policy="session_writes"}"#,
        "rtc_revocations_known",
    ] {
        assert!(samples.contains_key(family), "{family} missing:\n{text}");
    }
    let redis = backend != Backend::Memory;
    assert_eq!(samples["rtc_redis_connected"], f64::from(u8::from(redis)));
    assert_eq!(samples["rtc_storage_fallback_active"], 0.0);
    let redis_samples = samples
        .keys()
        .filter(|k| k.starts_with("rtc_redis_command_duration_seconds_count"))
        .count();
    assert_eq!(
        redis_samples > 0,
        redis,
        "Redis command latency only with Redis"
    );
}

crate::on_every_backend!(metrics_describe_the_instance);
