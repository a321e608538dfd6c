//! Rooms over HTTP: the WebSocket upgrade (`/ws/rooms/{room}`), with every
//! check done before it, the management publish, the member list and the
//! kick (with an optional ban).

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
use crate::rooms::{run_socket, Grant, Published, Resume, SocketParams};
use crate::state::AppState;
use crate::tokens::{Claims, TokenError, TokenService};

/// Longest `from` a management publish may give.
const MAX_FROM_CHARS: usize = 256;
/// Longest epoch a resuming client may send (ours are 12 characters).
const MAX_EPOCH_CHARS: usize = 64;
/// Longest ban a kick may ask for.
pub const MAX_BAN_SECONDS: u64 = 86_400;

pub(super) fn configure(t: &mut RouteTable) {
    t.at("/ws/rooms/{room}").route(Method::GET, upgrade);
    t.at("/api/rooms/{room}/publish")
        .route(Method::POST, publish);
    t.at("/api/rooms/{room}/members")
        .route(Method::GET, members);
    t.at("/api/rooms/{room}/members/{member_id}")
        .route(Method::DELETE, kick);
}

/// What a room socket keeps of its verified token.
fn grant_of(claims: Claims) -> Grant {
    Grant {
        member: claims.sub,
        room: claims.room,
        jti: claims.jti,
        expires_at: claims.exp,
        room_join: claims.grants.room_join,
        can_publish: claims.grants.can_publish_data,
    }
}

/// Rooms verify a live socket's `refresh` through the tokens wing, the
/// same way as the upgrade (wired by `startup`).
pub struct RoomTokens {
    pub tokens: TokenService,
    pub leeway_seconds: u64,
}

#[async_trait::async_trait]
impl crate::rooms::TokenCheck for RoomTokens {
    async fn verify(&self, token: &str) -> Result<Grant, String> {
        match self.tokens.verify(token).await {
            Ok(claims) => Ok(grant_of(claims)),
            Err(e) => Err(ApiError::from(e).detail()),
        }
    }

    fn is_revoked(&self, jti: &str) -> bool {
        self.tokens.revocations().is_revoked(jti)
    }

    fn leeway_seconds(&self) -> u64 {
        self.leeway_seconds
    }
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
    if state.rooms.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
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
    if let Some(until) = state.rooms.banned_until(&room, &claims.sub).await {
        return Err(ApiError::MemberBanned(until));
    }
    if state.rooms.is_full(&room, &claims.sub).await {
        return Err(ApiError::RoomFull);
    }
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::InvalidRequest(format!("not a WebSocket upgrade: {e}")))?;
    let params = SocketParams {
        room,
        grant: grant_of(claims),
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KickQuery {
    ban_seconds: Option<u64>,
}

/// `DELETE /api/rooms/{room}/members/{member_id}[?ban_seconds=N]`: closes
/// the member's sockets in the room on every instance (4004) and, with a
/// ban, refuses its joins (403 `member_banned`) until the ban ends.
async fn kick(
    _: Management,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (room, member) = path.into_inner();
    let room = path_id("room", &room)?;
    let member = path_id("member_id", &member)?;
    let query: KickQuery = super::query(&req)?;
    let ban = match query.ban_seconds {
        None | Some(0) => None,
        Some(s) if s <= MAX_BAN_SECONDS => Some(std::time::Duration::from_secs(s)),
        Some(_) => {
            return Err(ApiError::InvalidRequest(format!(
                "ban_seconds must be from 0 to {MAX_BAN_SECONDS}"
            )))
        }
    };
    let banned_until = state.rooms.kick(&room, member.as_str(), ban).await?;
    let mut answer = json!({ "room": room.as_str(), "member_id": member.as_str() });
    if let (Some(until), Some(map)) = (banned_until, answer.as_object_mut()) {
        map.insert("banned_until".into(), until.into());
    }
    Ok(HttpResponse::Accepted().json(answer))
}
