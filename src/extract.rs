//! Request extractors that turn raw HTTP input into typed values or one of
//! the contract's error codes.
//!
//! `JsonBody` reads the body itself instead of using actix's `Json`: it needs
//! the contract's codes (415/413/400 `invalid_json` vs `invalid_request`),
//! a nesting limit, and it keeps reading (and discarding) an oversized body
//! so the client receives the 413 instead of a reset connection.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{FromRequest, HttpRequest};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// How much of an oversized body is still read and discarded so the client
/// sees the 413 response; beyond this the connection is dropped.
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;

/// Size, nesting and time limits for JSON request bodies.
#[derive(Debug, Clone, Copy)]
pub struct JsonLimits {
    pub max_bytes: usize,
    pub max_depth: usize,
    /// Slow bodies: the whole body must arrive within this.
    pub timeout: Duration,
}

impl Default for JsonLimits {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024,
            max_depth: 32,
            timeout: Duration::from_secs(15),
        }
    }
}

/// A JSON request body deserialized into `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = read_body(req, payload);
        Box::pin(async move {
            let (body, limits) = body.await?.require_json()?;
            parse_json(&body, limits).map(JsonBody)
        })
    }
}

/// A JSON body for calls whose every field is optional: an empty body is
/// `None` (no content type needed), anything else is parsed as [`JsonBody`].
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = read_body(req, payload);
        Box::pin(async move {
            let read = body.await?;
            if read.body.iter().all(u8::is_ascii_whitespace) {
                return Ok(Self(None));
            }
            let (body, limits) = read.require_json()?;
            parse_json(&body, limits).map(|v| Self(Some(v)))
        })
    }
}

/// A body read within the JSON limits, and whether it was declared JSON.
struct ReadBody {
    body: Vec<u8>,
    is_json: bool,
    limits: JsonLimits,
}

impl ReadBody {
    /// The body, or 415 when it was not sent as JSON.
    fn require_json(self) -> Result<(Vec<u8>, JsonLimits), ApiError> {
        if !self.is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        Ok((self.body, self.limits))
    }
}

/// Reads the body (413 past the limit), noting its content type first.
fn read_body(
    req: &HttpRequest,
    payload: &mut Payload,
) -> impl Future<Output = Result<ReadBody, ApiError>> + 'static {
    let limits = req.app_data::<JsonLimits>().copied().unwrap_or_default();
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_content_type);
    let mut payload = payload.take();
    async move {
        let body =
            tokio::time::timeout(limits.timeout, read_limited(&mut payload, limits.max_bytes))
                .await
                .map_err(|_| ApiError::BodyTimeout(limits.timeout))??;
        Ok(ReadBody {
            body,
            is_json,
            limits,
        })
    }
}

fn is_json_content_type(value: &str) -> bool {
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.len() > 5 && mime.ends_with("+json"))
}

/// Reads at most `limit` bytes; past it keeps draining up to
/// [`DRAIN_LIMIT`] and then answers 413.
async fn read_limited(payload: &mut Payload, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::InvalidJson(format!("cannot read body: {e}")))?;
        seen = seen.saturating_add(chunk.len());
        if seen <= limit {
            body.extend_from_slice(&chunk);
        } else if seen > limit.saturating_add(DRAIN_LIMIT) {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Ok(body)
}

/// Parses a body: syntax problems are `invalid_json`, a valid document of
/// the wrong shape (missing or wrongly typed field) is `invalid_request`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8], limits: JsonLimits) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidJson("request body is empty".into()));
    }
    if nesting_depth(body) > limits.max_depth {
        return Err(ApiError::InvalidJson(format!(
            "JSON nested deeper than {} levels",
            limits.max_depth
        )));
    }
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::InvalidRequest(e.to_string()),
            Category::Syntax | Category::Eof | Category::Io => ApiError::InvalidJson(e.to_string()),
        }
    })
}

/// The deepest nesting of objects and arrays, ignoring brackets in strings.
fn nesting_depth(body: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth(br#"{"a":"[[[{{{\"]]"}"#), 1);
        assert_eq!(nesting_depth(br#"{"a":[{"b":[]}]}"#), 4);
        assert_eq!(nesting_depth(b"1"), 0);
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/merge-patch+json"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("json"));
    }

    #[test]
    fn syntax_vs_shape_errors() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct B {
            a: String,
        }
        let l = JsonLimits::default();
        assert!(matches!(
            parse_json::<B>(b"{", l),
            Err(ApiError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_json::<B>(b"", l),
            Err(ApiError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_json::<B>(br#"{"a":1}"#, l),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            parse_json::<B>(b"[]", l),
            Err(ApiError::InvalidRequest(_))
        ));
        let deep = "[".repeat(40) + &"]".repeat(40);
        assert!(matches!(
            parse_json::<B>(deep.as_bytes(), l),
            Err(ApiError::InvalidJson(_))
        ));
    }
}
