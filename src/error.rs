//! The one place where errors become HTTP responses: every failure is JSON
//! `{"error": "<code>", "detail": "<text>"}` with the status SPEC section 3
//! assigns to its code.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::domain::{IdError, TtlError};
use crate::sessions::SessionError;
use crate::store::StoreError;
use crate::tokens::TokenError;

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "1";

/// Every error a request can end in.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("expected content-type: application/json")]
    UnsupportedMediaType,
    #[error("request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{field}: {source}")]
    InvalidId {
        field: &'static str,
        source: IdError,
    },
    #[error(transparent)]
    InvalidTtl(#[from] TtlError),
    #[error("session_id is required")]
    MissingSessionId,
    #[error("token is required")]
    MissingToken,
    #[error("a valid API key is required (Authorization: Bearer <key> or X-API-Key)")]
    Unauthorized,
    #[error("no route for this path")]
    NotFound,
    #[error("method not allowed for this path")]
    MethodNotAllowed,
    #[error("no public keys: tokens are signed with a shared secret")]
    NoPublicKeys,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Overloaded(String),
}

impl ApiError {
    /// A malformed id in the named field or path segment.
    pub fn invalid_id(field: &'static str) -> impl FnOnce(IdError) -> Self {
        move |source| Self::InvalidId { field, source }
    }

    /// The contract's error code and status.
    fn code_and_status(&self) -> (&'static str, StatusCode) {
        use SessionError as S;
        use StatusCode as C;
        use TokenError as T;
        match self {
            Self::InvalidJson(_) => ("invalid_json", C::BAD_REQUEST),
            Self::UnsupportedMediaType => ("unsupported_media_type", C::UNSUPPORTED_MEDIA_TYPE),
            Self::PayloadTooLarge(_) => ("payload_too_large", C::PAYLOAD_TOO_LARGE),
            Self::InvalidRequest(_) => ("invalid_request", C::BAD_REQUEST),
            Self::InvalidId { .. } => ("invalid_id", C::BAD_REQUEST),
            Self::InvalidTtl(_) => ("invalid_ttl", C::BAD_REQUEST),
            Self::MissingSessionId => ("missing_session_id", C::BAD_REQUEST),
            Self::MissingToken => ("missing_token", C::BAD_REQUEST),
            Self::Unauthorized => ("unauthorized", C::UNAUTHORIZED),
            Self::NotFound | Self::NoPublicKeys => ("not_found", C::NOT_FOUND),
            Self::MethodNotAllowed => ("method_not_allowed", C::METHOD_NOT_ALLOWED),
            Self::Token(T::NoToken) => ("no_rtc_token", C::PRECONDITION_FAILED),
            Self::Token(T::Invalid(_)) => ("invalid_token", C::UNAUTHORIZED),
            Self::Session(S::NotFound) => ("session_not_found", C::NOT_FOUND),
            Self::Session(S::Exists) => ("session_exists", C::CONFLICT),
            Self::Session(S::MemberExists) => ("member_exists", C::CONFLICT),
            Self::Session(S::MemberNotFound) => ("member_not_found", C::NOT_FOUND),
            Self::Session(S::TooLarge(_)) => ("payload_too_large", C::PAYLOAD_TOO_LARGE),
            Self::Session(S::Full(_)) => ("session_full", C::CONFLICT),
            Self::Store(_)
            | Self::Token(T::Store(_))
            | Self::Session(S::Store(_))
            | Self::Session(S::Contended) => ("storage_unavailable", C::SERVICE_UNAVAILABLE),
            Self::Overloaded(_) => ("overloaded", C::SERVICE_UNAVAILABLE),
            Self::Token(T::Signing(_)) | Self::Session(S::Corrupt(_)) => {
                ("internal_error", C::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code_and_status().1
    }

    fn error_response(&self) -> HttpResponse {
        let (code, status) = self.code_and_status();
        let detail = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, "internal error");
            "internal error; see the broker's log".to_string()
        } else {
            // Overload is counted and warned about in `overload`, not per request.
            if status == StatusCode::SERVICE_UNAVAILABLE && !matches!(self, Self::Overloaded(_)) {
                tracing::warn!(error = %self, "storage unavailable");
            }
            self.to_string()
        };
        let mut response = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
        }
        response.json(json!({ "error": code, "detail": detail }))
    }
}
