//! `/api/health`, `/health/live`, `/health/ready` and `/api/storage/status`.

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::RouteTable;
use crate::state::AppState;
use crate::store::StorageKind;

pub(super) fn configure(t: &mut RouteTable) {
    t.at("/api/health").route(Method::GET, health);
    t.at("/health/live").route(Method::GET, live);
    t.at("/health/ready").route(Method::GET, ready);
    t.at("/api/storage/status")
        .route(Method::GET, storage_status);
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    let status = state.store.status();
    let mut warnings: Vec<&str> = state.warnings.iter().copied().collect();
    if status.storage == StorageKind::Memory {
        warnings.push("using_in_memory_storage");
    }
    if status.fallback_reason.is_some() {
        warnings.push("redis_unavailable_serving_from_memory");
    }
    let redis = status.mode.map(|mode| {
        json!({
            "mode": mode,
            "connected": status.connected,
            "master": status.master,
            "cluster_state": status.cluster_state,
            "fallback_reason": status.fallback_reason,
            "last_error": status.last_error,
        })
    });
    HttpResponse::Ok().json(json!({
        "ok": true,
        "uptime_s": state.lifecycle.uptime_s(),
        "server_id": state.lifecycle.server_id(),
        "storage": status.storage,
        "redis": redis,
        "warnings": warnings,
        "rooms": state.rooms.stats(),
        "recordings": state.recordings.stats(),
    }))
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "ok": true }))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let reason = match state.lifecycle.not_ready() {
        Some(why) => Some(why.reason()),
        None => {
            let status = state.store.status();
            let redis_down = status.storage == StorageKind::Redis && !status.connected;
            redis_down.then_some("storage_unavailable")
        }
    };
    match reason {
        None => HttpResponse::Ok().json(json!({ "ready": true })),
        Some(reason) => {
            HttpResponse::ServiceUnavailable().json(json!({ "ready": false, "reason": reason }))
        }
    }
}

async fn storage_status(state: web::Data<AppState>) -> HttpResponse {
    let status = state.store.status();
    HttpResponse::Ok().json(json!({
        "storage": status.storage,
        "mode": status.mode,
        "connected": status.connected,
        "master": status.master,
        "cluster_state": status.cluster_state,
        "fallback_reason": status.fallback_reason,
        "last_error": status.last_error,
        "since": status.since,
        "migrated": status.migrated,
        "entries": status.entries,
        "pending_replay": status.pending_replay,
    }))
}
