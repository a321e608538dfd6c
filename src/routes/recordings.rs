//! Recordings over HTTP (SPEC section 7): start, chunks, stop, status and
//! the download with Range and ETag. Chunk bodies stream to disk as they
//! arrive; uploads and stops take an API key or the recording's upload
//! token, which is what lets a browser record without holding a key.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::json;

use super::{path_id, RouteTable};
use crate::auth::{bearer, ApiKeys, Management};
use crate::domain::Id;
use crate::error::ApiError;
use crate::extract::OptionalJsonBody;
use crate::origins::AllowedOrigins;
use crate::recording::{run_socket, RecordingError};
use crate::state::AppState;

/// How much of a refused chunk is still read so the client sees the answer.
const DRAIN_LIMIT: usize = 32 * 1024 * 1024;

pub(super) fn configure(t: &mut RouteTable) {
    t.at("/api/recordings").route(Method::POST, start);
    t.at("/api/recordings/{id}/chunks")
        .route(Method::POST, chunk);
    t.at("/api/recordings/{id}/stop").route(Method::POST, stop);
    t.at("/api/recordings/{id}/status")
        .route(Method::GET, status);
    t.at("/ws/recordings/{id}").route(Method::GET, socket);
    t.at("/recordings/download/{key}")
        .route(Method::GET, download)
        .route(Method::HEAD, download);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    session_id: Option<String>,
}

async fn start(
    _: Management,
    state: web::Data<AppState>,
    OptionalJsonBody(body): OptionalJsonBody<StartBody>,
) -> Result<HttpResponse, ApiError> {
    let session_id = body
        .and_then(|b| b.session_id)
        .map(|s| Id::parse(&s).map_err(ApiError::invalid_id("session_id")))
        .transpose()?;
    let started = state.recordings.create(session_id).await?;
    Ok(HttpResponse::Created().json(started))
}

/// An API key, or an upload token for `record` (header, or `token` for
/// the WebSocket); open when no API keys are configured and no token is
/// presented. A presented token is always checked. Answers the upload
/// token's `jti` when one was used.
pub(super) async fn authorize(
    req: &HttpRequest,
    state: &AppState,
    record: &Id,
    query_token: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let keys = req.app_data::<ApiKeys>();
    let keys_on = keys.is_some_and(ApiKeys::is_enabled);
    if keys_on && keys.is_some_and(|k| k.check(req).is_ok()) {
        return Ok(None);
    }
    match bearer(req).or(query_token) {
        Some(token) => Ok(Some(
            state.recordings.check_upload_token(token, record).await?,
        )),
        None if !keys_on => Ok(None),
        None => Err(ApiError::Unauthorized),
    }
}

async fn chunk(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    mut body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let record = path_id("id", &path)?;
    state.recordings.available()?;
    authorize(&req, &state, &record, None).await?;
    let limit = state.limits.max_chunk_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        drain(&mut body).await;
        return Err(RecordingError::ChunkTooLarge(limit).into());
    }
    let mut upload = state.recordings.begin_upload(&record).await?;
    let timeout = state.limits.upload_timeout;
    let received = tokio::time::timeout(timeout, async {
        while let Some(piece) = body.next().await {
            let piece =
                piece.map_err(|e| ApiError::InvalidRequest(format!("cannot read body: {e}")))?;
            upload.write(&piece).await?;
        }
        Ok::<(), ApiError>(())
    })
    .await;
    match received {
        Err(_) => return Err(RecordingError::UploadTimeout(timeout.as_secs()).into()),
        Ok(Err(e)) => {
            drain(&mut body).await;
            return Err(e);
        }
        Ok(Ok(())) => {}
    }
    let index = upload.commit().await?;
    Ok(HttpResponse::Created().json(json!({ "record_id": record, "index": index })))
}

/// Reads and discards the rest of a refused body (up to [`DRAIN_LIMIT`]),
/// so the client gets the error instead of a reset connection.
async fn drain(body: &mut web::Payload) {
    let mut seen = 0usize;
    while let Some(Ok(piece)) = body.next().await {
        seen += piece.len();
        if seen > DRAIN_LIMIT {
            break;
        }
    }
}

#[derive(Deserialize)]
struct SocketQuery {
    token: Option<String>,
}

/// The recording's WebSocket; every check before the upgrade.
async fn socket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    origins: web::Data<AllowedOrigins>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let record = path_id("id", &path)?;
    origins.check(&req)?;
    state.recordings.available()?;
    let query: SocketQuery = super::query(&req)?;
    let token = query.token.as_deref().filter(|t| !t.is_empty());
    let jti = authorize(&req, &state, &record, token).await?;
    state.recordings.ensure_exists(&record).await?;
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::InvalidRequest(format!("not a WebSocket upgrade: {e}")))?;
    actix_web::rt::spawn(run_socket(
        state.recordings.clone(),
        session,
        stream,
        record,
        jti,
    ));
    Ok(response)
}

async fn stop(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let record = path_id("id", &path)?;
    state.recordings.available()?;
    authorize(&req, &state, &record, None).await?;
    let recording_state = state.recordings.stop(&record).await?;
    Ok(HttpResponse::Accepted().json(json!({ "record_id": record, "state": recording_state })))
}

async fn status(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let record = path_id("id", &path)?;
    authorize(&req, &state, &record, None).await?;
    Ok(HttpResponse::Ok().json(state.recordings.status(&record).await?))
}

/// A satisfiable single range, inclusive; `Err` when unsatisfiable (416);
/// `Ok(None)` when absent or not one we serve (the whole file, 200).
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // several ranges: the whole file is a valid answer
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let parse = |s: &str| s.trim().parse::<u64>().map_err(|_| ());
    let (start, end) = match (start.trim().is_empty(), end.trim().is_empty()) {
        (true, true) => return Ok(None),
        (true, false) => {
            let Ok(suffix) = parse(end) else {
                return Ok(None);
            };
            if suffix == 0 || size == 0 {
                return Err(());
            }
            (size.saturating_sub(suffix), size - 1)
        }
        (false, open_end) => {
            let Ok(start) = parse(start) else {
                return Ok(None);
            };
            let end = if open_end { Ok(u64::MAX) } else { parse(end) };
            let Ok(end) = end else { return Ok(None) };
            if end < start {
                return Ok(None);
            }
            (start, end.min(size.saturating_sub(1)))
        }
    };
    if start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn download(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = path_id("key", &path)?;
    let meta = state.recordings.download(&key).await?;
    let etag = format!("\"{key}-{}\"", meta.size);
    let header_str = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if header_str(header::IF_NONE_MATCH).is_some_and(|v| v.split(',').any(|t| t.trim() == etag)) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    // If-Range with another validator: the file changed, send it whole.
    let range_applies = header_str(header::IF_RANGE).is_none_or(|v| v.trim() == etag);
    let range = match header_str(header::RANGE).filter(|_| range_applies) {
        Some(value) => parse_range(value, meta.size),
        None => Ok(None),
    };
    let mut response = match range {
        Err(()) => {
            return Ok(HttpResponse::build(StatusCode::RANGE_NOT_SATISFIABLE)
                .insert_header((header::CONTENT_RANGE, format!("bytes */{}", meta.size)))
                .json(json!({
                    "error": crate::error::RANGE_NOT_SATISFIABLE,
                    "detail": format!("the file has {} bytes", meta.size),
                })));
        }
        Ok(Some((start, end))) => {
            let mut r = HttpResponse::PartialContent();
            r.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{}", meta.size),
            ));
            (r, start, end - start + 1)
        }
        Ok(None) => (HttpResponse::Ok(), 0, meta.size),
    };
    let (ref mut builder, offset, len) = response;
    builder
        .insert_header((header::CONTENT_TYPE, "video/webm"))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "private, max-age=3600"))
        .no_chunking(len);
    // HEAD gets the same framing; actix sends no body bytes for it.
    let stream = state
        .recordings
        .read(&meta, offset, len)
        .await
        .map_err(RecordingError::from)?;
    Ok(builder.streaming(stream))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-500", 100), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=50-5000", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=9-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=x-1", 100), Ok(None));
    }
}
