//! The one place where errors become HTTP responses: every failure is JSON
//! `{"error": "<code>", "detail": "<text>"}` with the status SPEC section 3
//! assigns to its code.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::domain::{IdError, TtlError};
use crate::recording::RecordingError;
use crate::rooms::PublishError;
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
    #[error("{0}")]
    RoomForbidden(String),
    #[error("this Origin is not allowed to connect")]
    OriginForbidden,
    #[error("the room has reached its member limit")]
    RoomFull,
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Recording(#[from] RecordingError),
}

impl ApiError {
    /// A malformed id in the named field or path segment.
    pub fn invalid_id(field: &'static str) -> impl FnOnce(IdError) -> Self {
        move |source| Self::InvalidId { field, source }
    }

    /// The contract's code, e.g. for an error frame on a WebSocket.
    pub fn code(&self) -> &'static str {
        self.code_and_status().0
    }

    /// What a client is told about this error (as in an HTTP answer).
    pub fn detail(&self) -> String {
        self.public_detail(self.code_and_status().1)
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
            Self::Store(e)
            | Self::Token(T::Store(e))
            | Self::Session(S::Store(e))
            | Self::Publish(PublishError::Store(e)) => store_code(e),
            Self::Session(S::Contended) | Self::Session(S::OnlyInRedis) => {
                ("storage_unavailable", C::SERVICE_UNAVAILABLE)
            }
            Self::Overloaded(_) => ("overloaded", C::SERVICE_UNAVAILABLE),
            Self::RoomForbidden(_) => ("room_forbidden", C::FORBIDDEN),
            Self::OriginForbidden => ("origin_forbidden", C::FORBIDDEN),
            Self::RoomFull => ("room_full", C::FORBIDDEN),
            Self::Publish(PublishError::BufferFull(_)) => {
                ("storage_unavailable", C::SERVICE_UNAVAILABLE)
            }
            Self::Token(T::Signing(_)) | Self::Session(S::Corrupt(_)) => {
                ("internal_error", C::INTERNAL_SERVER_ERROR)
            }
            Self::Recording(e) => recording_code(e),
        }
    }

    /// The storage error behind this one, if any.
    fn store_error(&self) -> Option<&StoreError> {
        match self {
            Self::Store(e)
            | Self::Token(TokenError::Store(e))
            | Self::Session(SessionError::Store(e))
            | Self::Publish(PublishError::Store(e))
            | Self::Recording(RecordingError::Store(e))
            | Self::Recording(RecordingError::Token(TokenError::Store(e))) => Some(e),
            _ => None,
        }
    }

    /// What the client reads in `detail`: the message for its own mistakes,
    /// fixed text for ours (causes stay in the log).
    fn public_detail(&self, status: StatusCode) -> String {
        match self.store_error() {
            Some(e) => e.public_detail().to_string(),
            None if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE => {
                "internal error; see the broker's log".to_string()
            }
            None => self.to_string(),
        }
    }
}

/// Outages and an out-of-memory Redis are worth a retry (503); any other
/// refusal is a fault on our side or foreign data (500).
fn store_code(e: &StoreError) -> (&'static str, StatusCode) {
    match e {
        StoreError::Unavailable(_) | StoreError::Timeout(_) | StoreError::OutOfMemory(_) => {
            ("storage_unavailable", StatusCode::SERVICE_UNAVAILABLE)
        }
        StoreError::Rejected(_) => ("internal_error", StatusCode::INTERNAL_SERVER_ERROR),
    }
}

fn recording_code(e: &RecordingError) -> (&'static str, StatusCode) {
    use RecordingError as R;
    use StatusCode as C;
    match e {
        R::NotFound => ("recording_not_found", C::NOT_FOUND),
        R::NotActive => ("recording_not_active", C::CONFLICT),
        R::EmptyChunk => ("empty_chunk", C::BAD_REQUEST),
        R::ChunkTooLarge(_) => ("chunk_too_large", C::PAYLOAD_TOO_LARGE),
        R::TooManyChunks(_) => ("too_many_chunks", C::CONFLICT),
        R::UploadTimeout(_) => ("upload_timeout", C::REQUEST_TIMEOUT),
        R::Forbidden => ("recording_forbidden", C::FORBIDDEN),
        R::MergeUnavailable(_) => ("merge_unavailable", C::SERVICE_UNAVAILABLE),
        R::OnlyInRedis | R::Contended => ("storage_unavailable", C::SERVICE_UNAVAILABLE),
        R::Token(TokenError::Invalid(_)) => ("invalid_token", C::UNAUTHORIZED),
        R::Token(TokenError::NoToken) => ("invalid_token", C::UNAUTHORIZED),
        R::Store(e) | R::Token(TokenError::Store(e)) => store_code(e),
        R::Token(TokenError::Signing(_)) | R::Corrupt(_) | R::Storage(_) => {
            ("internal_error", C::INTERNAL_SERVER_ERROR)
        }
    }
}

/// An error and its causes, one after another, for the log.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code_and_status().1
    }

    fn error_response(&self) -> HttpResponse {
        let (code, status) = self.code_and_status();
        // Overload is counted and warned about in `overload`, not per request.
        if status == StatusCode::SERVICE_UNAVAILABLE && !matches!(self, Self::Overloaded(_)) {
            tracing::warn!(error = %chain(self), code, "request refused for now");
        } else if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %chain(self), "internal error");
        }
        let detail = self.public_detail(status);
        let mut response = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
        }
        response.json(json!({ "error": code, "detail": detail }))
    }
}
