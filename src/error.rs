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
    #[error("this member is banned from the room until {0} (unix seconds)")]
    MemberBanned(u64),
    #[error("this instance is shutting down: connect to another one")]
    ShuttingDown,
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error(transparent)]
    RateLimited(#[from] crate::ratelimit::Exceeded),
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
            Self::MemberBanned(_) => ("member_banned", C::FORBIDDEN),
            Self::ShuttingDown => ("shutting_down", C::SERVICE_UNAVAILABLE),
            Self::Publish(PublishError::BufferFull(_)) => {
                ("storage_unavailable", C::SERVICE_UNAVAILABLE)
            }
            Self::Token(T::Signing(_)) | Self::Session(S::Corrupt(_)) => {
                ("internal_error", C::INTERNAL_SERVER_ERROR)
            }
            Self::Recording(e) => recording_code(e),
            Self::BodyTimeout(_) => ("request_timeout", C::REQUEST_TIMEOUT),
            Self::RateLimited(_) => ("rate_limited", C::TOO_MANY_REQUESTS),
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

/// The code of the 416 a download answers for a range outside the file
/// (written in `routes::recordings`, which adds `Content-Range`).
pub const RANGE_NOT_SATISFIABLE: &str = "range_not_satisfiable";

/// The code of the 431 the HTTP layer answers for a request head over its
/// limits (written by the vendored actix-http dispatcher, before routing).
pub const HEADERS_TOO_LARGE: &str = "headers_too_large";

/// Every error code the broker answers with, and its status: the enum of
/// the OpenAPI document's error schema. Keep it in step with
/// `code_and_status` and `recording_code` (the tests below check both ways).
pub const ERROR_CODES: &[(&str, StatusCode)] = &[
    ("invalid_json", StatusCode::BAD_REQUEST),
    ("invalid_request", StatusCode::BAD_REQUEST),
    ("invalid_id", StatusCode::BAD_REQUEST),
    ("invalid_ttl", StatusCode::BAD_REQUEST),
    ("missing_session_id", StatusCode::BAD_REQUEST),
    ("missing_token", StatusCode::BAD_REQUEST),
    ("empty_chunk", StatusCode::BAD_REQUEST),
    ("unauthorized", StatusCode::UNAUTHORIZED),
    ("invalid_token", StatusCode::UNAUTHORIZED),
    ("room_forbidden", StatusCode::FORBIDDEN),
    ("origin_forbidden", StatusCode::FORBIDDEN),
    ("room_full", StatusCode::FORBIDDEN),
    ("member_banned", StatusCode::FORBIDDEN),
    ("recording_forbidden", StatusCode::FORBIDDEN),
    ("not_found", StatusCode::NOT_FOUND),
    ("session_not_found", StatusCode::NOT_FOUND),
    ("member_not_found", StatusCode::NOT_FOUND),
    ("recording_not_found", StatusCode::NOT_FOUND),
    ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED),
    ("request_timeout", StatusCode::REQUEST_TIMEOUT),
    ("upload_timeout", StatusCode::REQUEST_TIMEOUT),
    ("session_exists", StatusCode::CONFLICT),
    ("member_exists", StatusCode::CONFLICT),
    ("session_full", StatusCode::CONFLICT),
    ("recording_not_active", StatusCode::CONFLICT),
    ("too_many_chunks", StatusCode::CONFLICT),
    ("no_rtc_token", StatusCode::PRECONDITION_FAILED),
    ("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE),
    (
        HEADERS_TOO_LARGE,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    ),
    ("chunk_too_large", StatusCode::PAYLOAD_TOO_LARGE),
    ("unsupported_media_type", StatusCode::UNSUPPORTED_MEDIA_TYPE),
    (RANGE_NOT_SATISFIABLE, StatusCode::RANGE_NOT_SATISFIABLE),
    ("rate_limited", StatusCode::TOO_MANY_REQUESTS),
    ("internal_error", StatusCode::INTERNAL_SERVER_ERROR),
    ("storage_unavailable", StatusCode::SERVICE_UNAVAILABLE),
    ("overloaded", StatusCode::SERVICE_UNAVAILABLE),
    ("merge_unavailable", StatusCode::SERVICE_UNAVAILABLE),
    ("shutting_down", StatusCode::SERVICE_UNAVAILABLE),
];

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
        if let Self::RateLimited(exceeded) = self {
            for (name, value) in exceeded.headers() {
                response.insert_header((name, value));
            }
        }
        response.json(json!({ "error": code, "detail": detail }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;
    use crate::config::RateLimitSettings;
    use crate::domain::Id;
    use crate::ratelimit::{Exceeded, RateLimiter};

    /// A real refusal of the rate limiter (its fields are its own).
    async fn exceeded() -> Exceeded {
        let settings = RateLimitSettings {
            tokens_per_window: 0,
            session_writes_per_window: 1,
            window_seconds: 60,
            trusted_proxies: vec![],
        };
        let limiter = RateLimiter::new(&settings, None).expect("no proxies to parse");
        let session = Id::parse("s").expect("valid id");
        let _ = limiter.session_write(&session).await;
        match limiter.session_write(&session).await {
            Err(exceeded) => exceeded,
            Ok(quota) => panic!("the second write of a 1-per-window limit passed: {quota:?}"),
        }
    }

    /// At least one error of every variant and every distinct inner case.
    async fn samples() -> Vec<ApiError> {
        use RecordingError as R;
        use SessionError as S;
        use TokenError as T;
        let store = || StoreError::unavailable("down");
        vec![
            ApiError::InvalidJson("x".into()),
            ApiError::UnsupportedMediaType,
            ApiError::PayloadTooLarge(1),
            ApiError::InvalidRequest("x".into()),
            ApiError::invalid_id("id")(IdError),
            ApiError::InvalidTtl(TtlError { max: 1 }),
            ApiError::MissingSessionId,
            ApiError::MissingToken,
            ApiError::Unauthorized,
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::NoPublicKeys,
            ApiError::Token(T::NoToken),
            ApiError::Token(T::Invalid("x".into())),
            ApiError::Token(T::Signing("x".into())),
            ApiError::Token(T::Store(store())),
            ApiError::Session(S::NotFound),
            ApiError::Session(S::Exists),
            ApiError::Session(S::MemberExists),
            ApiError::Session(S::MemberNotFound),
            ApiError::Session(S::TooLarge(1)),
            ApiError::Session(S::Full(1)),
            ApiError::Session(S::Contended),
            ApiError::Session(S::OnlyInRedis),
            ApiError::Session(S::Corrupt("x".into())),
            ApiError::Session(S::Store(store())),
            ApiError::Store(store()),
            ApiError::Store(StoreError::Timeout(Duration::from_secs(1))),
            ApiError::Store(StoreError::OutOfMemory("oom".into())),
            ApiError::Store(StoreError::rejected("no")),
            ApiError::Overloaded("x".into()),
            ApiError::RoomForbidden("x".into()),
            ApiError::OriginForbidden,
            ApiError::RoomFull,
            ApiError::MemberBanned(1),
            ApiError::ShuttingDown,
            ApiError::Publish(PublishError::Store(store())),
            ApiError::Publish(PublishError::BufferFull(1)),
            ApiError::Recording(R::NotFound),
            ApiError::Recording(R::NotActive),
            ApiError::Recording(R::EmptyChunk),
            ApiError::Recording(R::ChunkTooLarge(1)),
            ApiError::Recording(R::TooManyChunks(1)),
            ApiError::Recording(R::UploadTimeout(1)),
            ApiError::Recording(R::Forbidden),
            ApiError::Recording(R::MergeUnavailable("x".into())),
            ApiError::Recording(R::OnlyInRedis),
            ApiError::Recording(R::Contended),
            ApiError::Recording(R::Corrupt("x".into())),
            ApiError::Recording(R::Store(store())),
            ApiError::Recording(R::Storage(std::io::Error::other("x").into())),
            ApiError::Recording(R::Token(T::Invalid("x".into()))),
            ApiError::Recording(R::Token(T::NoToken)),
            ApiError::BodyTimeout(Duration::from_secs(1)),
            ApiError::RateLimited(exceeded().await),
        ]
    }

    /// Fails to compile when a variant is added: give it a sample above.
    #[allow(dead_code)]
    fn every_variant_has_a_sample(e: &ApiError) {
        match e {
            ApiError::InvalidJson(_)
            | ApiError::UnsupportedMediaType
            | ApiError::PayloadTooLarge(_)
            | ApiError::InvalidRequest(_)
            | ApiError::InvalidId { .. }
            | ApiError::InvalidTtl(_)
            | ApiError::MissingSessionId
            | ApiError::MissingToken
            | ApiError::Unauthorized
            | ApiError::NotFound
            | ApiError::MethodNotAllowed
            | ApiError::NoPublicKeys
            | ApiError::Token(_)
            | ApiError::Session(_)
            | ApiError::Store(_)
            | ApiError::Overloaded(_)
            | ApiError::RoomForbidden(_)
            | ApiError::OriginForbidden
            | ApiError::RoomFull
            | ApiError::MemberBanned(_)
            | ApiError::ShuttingDown
            | ApiError::Publish(_)
            | ApiError::Recording(_)
            | ApiError::BodyTimeout(_)
            | ApiError::RateLimited(_) => {}
        }
    }

    #[tokio::test]
    async fn error_codes_lists_every_code_with_its_status_and_nothing_else() {
        let listed: BTreeSet<(&str, u16)> =
            ERROR_CODES.iter().map(|(c, s)| (*c, s.as_u16())).collect();
        assert_eq!(listed.len(), ERROR_CODES.len(), "a code is listed twice");
        let mut produced: BTreeSet<(&str, u16)> = samples()
            .await
            .iter()
            .map(|e| e.code_and_status())
            .map(|(c, s)| (c, s.as_u16()))
            .collect();
        produced.insert((RANGE_NOT_SATISFIABLE, 416));
        // Written before routing, by vendor/actix-http (tests/api/slowloris.rs).
        produced.insert((HEADERS_TOO_LARGE, 431));
        let unlisted: Vec<_> = produced.difference(&listed).collect();
        let unproduced: Vec<_> = listed.difference(&produced).collect();
        assert!(unlisted.is_empty(), "not in ERROR_CODES: {unlisted:?}");
        assert!(
            unproduced.is_empty(),
            "listed but never produced: {unproduced:?}"
        );
    }
}
