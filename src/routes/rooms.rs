//! Rooms over HTTP: the WebSocket upgrade (`/ws/rooms/{room}`), with every
//! check done before it, and the management publish and member list.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::{path_id, text_field, RouteTable};
use crate::auth::Management;
use crate::domain::Id;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::origins::AllowedOrigins;
use crate::rooms::{run_socket, Published, Resume, SocketParams};
use crate::state::AppState;
use crate::tokens::TokenError;

/// Longest `from` a management publish may give.
const MAX_FROM_CHARS: usize = 256;
/// Longest epoch a resuming client may send (ours are 12 characters).
const MAX_EPOCH_CHARS: usize = 64;

pub(super) fn configure(t: &mut RouteTable) {
    t.at("/ws/rooms/{room}").route(Method::GET, upgrade);
    t.at("/api/rooms/{room}/publish")
        .route(Method::POST, publish);
    t.at("/api/rooms/{room}/members")
        .route(Method::GET, members);
}

#[derive(Deserialize)]
struct UpgradeQuery {
    token: Option<String>,
    since: Option<u64>,
    epoch: Option<String>,
}

/// The bearer token of a WebSocket handshake: header first, then `?token=`.
fn presented_token(req: &HttpRequest, query: &UpgradeQuery) -> Option<String> {
    crate::auth::bearer(req)
        .map(str::to_string)
        .or_else(|| query.token.clone())
        .filter(|t| !t.is_empty())
}

fn resume(query: &UpgradeQuery) -> Result<Option<Resume>, ApiError> {
    let Some(since) = query.since else {
        return match query.epoch {
            Some(_) => Err(ApiError::InvalidRequest("epoch needs since".into())),
            None => Ok(None),
        };
    };
    let epoch = query.epoch.clone().unwrap_or_default();
    let valid = epoch.len() <= MAX_EPOCH_CHARS
        && epoch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(ApiError::InvalidRequest(format!(
            "epoch must be at most {MAX_EPOCH_CHARS} characters of [A-Za-z0-9_-]"
        )));
    }
    Ok(Some(Resume { since, epoch }))
}

async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    origins: web::Data<AllowedOrigins>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let room = path_id("room", &path)?;
    origins.check(&req)?;
    let query: UpgradeQuery = super::query(&req)?;
    let token = presented_token(&req, &query).ok_or_else(|| {
        ApiError::Token(TokenError::Invalid(
            "a token is required (Authorization: Bearer or ?token=)".into(),
        ))
    })?;
    let resume = resume(&query)?;
    let claims = state.tokens.verify(&token).await?;
    if claims.room != room.as_str() {
        return Err(ApiError::RoomForbidden(
            "the token is for another room".into(),
        ));
    }
    if !claims.grants.room_join {
        return Err(ApiError::RoomForbidden(
            "the token does not grant room_join".into(),
        ));
    }
    if state.rooms.is_full(&room, &claims.sub).await {
        return Err(ApiError::RoomFull);
    }
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::InvalidRequest(format!("not a WebSocket upgrade: {e}")))?;
    let params = SocketParams {
        room,
        member: claims.sub,
        can_publish: claims.grants.can_publish_data,
        resume,
    };
    actix_web::rt::spawn(run_socket(state.rooms.clone(), session, stream, params));
    Ok(response)
}

#[derive(Deserialize)]
struct PublishBody {
    data: Option<Box<RawValue>>,
    from: Option<String>,
}

async fn publish(
    _: Management,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<HttpResponse, ApiError> {
    let room: Id = path_id("room", &path)?;
    let data = body
        .data
        .ok_or_else(|| ApiError::InvalidRequest("data is required".into()))?;
    let from = match body.from {
        Some(from) => text_field("from", from, MAX_FROM_CHARS)?,
        None => "server".to_string(),
    };
    let answer = match state.rooms.publish(&room, &from, data).await? {
        Published::Sent(id) => json!({ "id": id }),
        // Held for Redis: the id is assigned when Redis takes the message.
        Published::Buffered => json!({ "id": null, "buffered": true }),
    };
    Ok(HttpResponse::Accepted().json(answer))
}

async fn members(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let room = path_id("room", &path)?;
    let members: Vec<_> = state
        .rooms
        .members(&room)
        .await?
        .into_iter()
        .map(|(member_id, connections)| json!({"member_id": member_id, "connections": connections}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "room": room.as_str(), "members": members })))
}
