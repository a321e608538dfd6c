//! `/api/voice/token`, `/api/tokens/verify` and `/.well-known/jwks.json`.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{path_id, text_field, RouteTable};
use crate::auth::Management;
use crate::domain::{Id, Ttl};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;
use crate::tokens::{Grants, IssueRequest};

/// Longest accepted `identity` (the token's `sub`).
const MAX_IDENTITY_CHARS: usize = 256;

pub(super) fn configure(t: &mut RouteTable) {
    t.at("/api/voice/token").route(Method::POST, issue);
    t.at("/api/voice/token/{session_id}")
        .route(Method::GET, fetch)
        .route(Method::DELETE, revoke);
    t.at("/api/tokens/verify").route(Method::POST, verify);
    t.at("/api/tokens/revoke")
        .route(Method::POST, revoke_presented);
    t.at("/.well-known/jwks.json").route(Method::GET, jwks);
}

/// The wire form of a token request; every field is checked in `parse`.
#[derive(Deserialize)]
struct IssueBody {
    session_id: Option<String>,
    identity: Option<String>,
    room: Option<String>,
    ttl_seconds: Option<Value>,
    grants: Option<Value>,
}

impl IssueBody {
    fn parse(self, state: &AppState) -> Result<IssueRequest, ApiError> {
        let session_id = self.session_id.ok_or(ApiError::MissingSessionId)?;
        let session_id = Id::parse(&session_id).map_err(ApiError::invalid_id("session_id"))?;
        let identity = match self.identity {
            Some(identity) => text_field("identity", identity, MAX_IDENTITY_CHARS)?,
            None => "anonymous".to_string(),
        };
        let room = match self.room {
            Some(room) => Id::parse(&room).map_err(ApiError::invalid_id("room"))?,
            None => session_id.clone(),
        };
        let max = state.limits.token_max_ttl;
        let ttl = match self.ttl_seconds {
            Some(v) => Ttl::from_json(&v, max)?,
            None => Ttl::new(state.limits.token_default_ttl, max)?,
        };
        Ok(IssueRequest {
            session_id,
            identity,
            room,
            ttl,
            grants: parse_grants(self.grants)?,
        })
    }
}

/// `grants` must be an object of booleans; absent ones default to true.
fn parse_grants(value: Option<Value>) -> Result<Grants, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(Grants::default()),
        Some(v @ Value::Object(_)) => {
            serde_json::from_value(v).map_err(|e| ApiError::InvalidRequest(format!("grants: {e}")))
        }
        Some(_) => Err(ApiError::InvalidRequest(
            "grants must be an object of booleans".into(),
        )),
    }
}

async fn issue(
    _: Management,
    req: HttpRequest,
    state: web::Data<AppState>,
    JsonBody(body): JsonBody<IssueBody>,
) -> Result<HttpResponse, ApiError> {
    let request = body.parse(&state)?;
    let quota = state
        .rate_limit
        .token_issue(&req, &request.session_id)
        .await?;
    let issued = state.tokens.issue(request).await?;
    let mut response = HttpResponse::Ok();
    if let Some(quota) = quota {
        quota.insert_into(&mut response);
    }
    Ok(response.json(json!({
        "rtc_token": issued.rtc_token,
        "session_id": issued.session_id,
        "identity": issued.identity,
        "room": issued.room,
        "expires_at": issued.expires_at,
        "opts": { "expires_at": issued.expires_at },
    })))
}

async fn fetch(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session_id = path_id("session_id", &path)?;
    let token = state.tokens.fetch(&session_id).await?;
    Ok(HttpResponse::Ok().json(token))
}

async fn revoke(
    _: Management,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session_id = path_id("session_id", &path)?;
    state.tokens.revoke(&session_id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct VerifyBody {
    token: Option<String>,
}

impl VerifyBody {
    /// The presented token; 400 `missing_token` when absent or empty.
    fn token(self) -> Result<String, ApiError> {
        self.token
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::MissingToken)
    }
}

async fn verify(
    state: web::Data<AppState>,
    JsonBody(body): JsonBody<VerifyBody>,
) -> Result<HttpResponse, ApiError> {
    let token = body.token()?;
    let claims = state.tokens.verify(&token).await?;
    Ok(HttpResponse::Ok().json(json!({ "valid": true, "claims": claims })))
}

/// Revokes any token of ours (RTC or upload) by its `jti`, e.g. a leaked
/// one, until it would have expired. 204; 401 `invalid_token` for a token
/// that does not verify (nothing to revoke).
async fn revoke_presented(
    _: Management,
    state: web::Data<AppState>,
    JsonBody(body): JsonBody<VerifyBody>,
) -> Result<HttpResponse, ApiError> {
    let token = body.token()?;
    state.tokens.revoke_token(&token).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn jwks(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let jwks = state.tokens.keys().jwks().ok_or(ApiError::NoPublicKeys)?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=300"))
        .json(jwks))
}
