//! `/api/sessions`: records with metadata, members and a sliding TTL.

use actix_web::http::Method;
use actix_web::{web, HttpResponse, HttpResponseBuilder};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{path_id, text_field, RouteTable};
use crate::auth::Management;
use crate::domain::{Id, Ttl};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::sessions::{NewMember, NewSession};
use crate::state::AppState;

const MAX_DISPLAY_NAME_CHARS: usize = 256;
const MAX_ROLE_CHARS: usize = 64;

pub(super) fn configure(t: &mut RouteTable) {
    t.at("/api/sessions").route(Method::POST, create);
    t.at("/api/sessions/{id}")
        .route(Method::GET, get)
        .route(Method::PATCH, patch);
    t.at("/api/sessions/{id}/members")
        .route(Method::POST, add_member);
    t.at("/api/sessions/{id}/members/{member_id}")
        .route(Method::DELETE, remove_member);
    t.at("/api/sessions/{id}/end").route(Method::POST, end);
}

/// Counts a write for the session (429 `rate_limited` past
/// `rate_limit.session_writes_per_window`) and starts the answer with the
/// quota's `RateLimit-*` headers.
async fn counted(
    state: &AppState,
    id: Option<&Id>,
    mut response: HttpResponseBuilder,
) -> Result<HttpResponseBuilder, ApiError> {
    if let Some(id) = id {
        if let Some(quota) = state.rate_limit.session_write(id).await? {
            quota.insert_into(&mut response);
        }
    }
    Ok(response)
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
    // A generated id is new: only a chosen one can be written to repeatedly.
    let mut response = counted(&state, session_id.as_ref(), HttpResponse::Created()).await?;
    let record = state
        .sessions
        .create(NewSession {
            session_id,
            ttl,
            metadata: body.metadata.unwrap_or_default(),
        })
        .await?;
    Ok(response.json(record))
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
    let mut response = counted(&state, Some(&id), HttpResponse::Ok()).await?;
    Ok(response.json(state.sessions.patch(&id, body.metadata).await?))
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
    let mut response = counted(&state, Some(&id), HttpResponse::Created()).await?;
    let record = state.sessions.add_member(&id, member).await?;
    Ok(response.json(record))
}

async fn remove_member(
    _: Management,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id("session_id", &path.0)?;
    let member_id = path_id("member_id", &path.1)?;
    let mut response = counted(&state, Some(&id), HttpResponse::Ok()).await?;
    Ok(response.json(state.sessions.remove_member(&id, &member_id).await?))
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
    let mut response = counted(&state, Some(&id), HttpResponse::Ok()).await?;
    state.sessions.ensure_exists(&id).await?;
    state.tokens.revoke(&id).await?;
    state.sessions.end(&id).await?;
    Ok(response.json(json!({ "summary": "ended" })))
}
