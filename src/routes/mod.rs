//! HTTP routes, one module per resource. `configure` mounts them all; the
//! JSON 404/405 answers for unknown routes and methods live here too.

mod health;
mod metrics;
mod recordings;
mod rooms;
mod sessions;
mod tokens;

use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, ResponseError};

use crate::error::ApiError;

/// Mounts every route of the broker.
pub fn configure(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    metrics::configure(cfg);
    tokens::configure(cfg);
    sessions::configure(cfg);
    rooms::configure(cfg);
    recordings::configure(cfg);
}

/// The app-wide fallback for paths no route matches.
pub async fn not_found() -> actix_web::HttpResponse {
    ApiError::NotFound.error_response()
}

/// Rewrites actix's empty 405 (a known path, another method) into the
/// contract's JSON error.
pub fn json_method_not_allowed<B: 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().handler(StatusCode::METHOD_NOT_ALLOWED, |res: ServiceResponse<B>| {
        let (req, _) = res.into_parts();
        let res = ApiError::MethodNotAllowed.error_response();
        Ok(ErrorHandlerResponse::Response(
            ServiceResponse::new(req, res).map_into_right_body(),
        ))
    })
}

/// Parses a path segment into an id, or `invalid_id` naming the segment.
fn path_id(field: &'static str, raw: &str) -> Result<crate::domain::Id, ApiError> {
    crate::domain::Id::parse(raw).map_err(ApiError::invalid_id(field))
}

/// Parses the query string of a request (400 `invalid_request` when it
/// does not fit `T`).
fn query<T: serde::de::DeserializeOwned>(req: &actix_web::HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::InvalidRequest(format!("bad query string: {e}")))
}

/// Checks a free-text field: 1..=max characters, no control characters.
fn text_field(field: &str, value: String, max: usize) -> Result<String, ApiError> {
    let len = value.chars().count();
    if len == 0 || len > max || value.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(format!(
            "{field} must be 1 to {max} characters without control characters"
        )));
    }
    Ok(value)
}
