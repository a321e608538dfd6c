//! `/api/sessions`: records with metadata, members and a sliding TTL.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{path_id, text_field};
use crate::auth::Management;
use crate::domain::{Id, Ttl};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::sessions::{NewMember, NewSession};
use crate::state::AppState;

const MAX_DISPLAY_NAME_CHARS: usize = 256;
const MAX_ROLE_CHARS: usize = 64;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/sessions").route(web::post().to(create)))
        .service(
            web::resource("/api/sessions/{id}")
                .route(web::get().to(get))
                .route(web::patch().to(patch)),
        )
        .service(web::resource("/api/sessions/{id}/members").route(web::post().to(add_member)))
        .service(
            web::resource("/api/sessions/{id}/members/{member_id}")
                .route(web::delete().to(remove_member)),
        )
        .service(web::resource("/api/sessions/{id}/end").route(web::post().to(end)));
}

#[derive(Deserialize)]
struct CreateBody {
    session_id: Option<String>,
    ttl_seconds: Option<Value>,
    metadata: Option<Map<String, Value>>,
}

async fn create(
    _: Management,
    state: web::Data<AppState>,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let session_id = body
        .session_id
        .map(|id| Id::parse(&id).map_err(ApiError::invalid_id("session_id")))
        .transpose()?;
    let ttl = body
        .ttl_seconds
        .map(|v| Ttl::from_json(&v, state.limits.session_max_ttl))
        .transpose()?;
    let record = state
        .sessions
        .create(NewSession {
            session_id,
            ttl,
            metadata: body.metadata.unwrap_or_default(),
        })
        .await?;
    Ok(HttpResponse::Created().json(record))
}

async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("session_id", &path)?;
    Ok(HttpResponse::Ok().json(state.sessions.get(&id).await?))
}

#[derive(Deserialize)]
struct PatchBody {
    metadata: Map<String, Value>,
}

async fn patch(
    _: Management,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<PatchBody>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("session_id", &path)?;
    Ok(HttpResponse::Ok().json(state.sessions.patch(&id, body.metadata).await?))
}

#[derive(Deserialize)]
struct MemberBody {
    member_id: String,
    display_name: Option<String>,
    role: Option<String>,
}

async fn add_member(
    _: Management,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<MemberBody>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("session_id", &path)?;
    let member = NewMember {
        member_id: Id::parse(&body.member_id).map_err(ApiError::invalid_id("member_id"))?,
        display_name: body
            .display_name
            .map(|n| text_field("display_name", n, MAX_DISPLAY_NAME_CHARS))
            .transpose()?,
        role: body
            .role
            .map(|r| text_field("role", r, MAX_ROLE_CHARS))
            .transpose()?,
    };
    let record = state.sessions.add_member(&id, member).await?;
    Ok(HttpResponse::Created().json(record))
}

async fn remove_member(
    _: Management,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("session_id", &path.0)?;
    let member_id = path_id("member_id", &path.1)?;
    Ok(HttpResponse::Ok().json(state.sessions.remove_member(&id, &member_id).await?))
}

/// Ends a session: its token is revoked, then the record deleted. In that
/// order, a failure between the two leaves the session in place, so the
/// client's retry completes the end rather than getting 404 with a token
/// still live.
async fn end(
    _: Management,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("session_id", &path)?;
    state.sessions.ensure_exists(&id).await?;
    state.tokens.revoke(&id).await?;
    state.sessions.end(&id).await?;
    Ok(HttpResponse::Ok().json(json!({ "summary": "ended" })))
}
