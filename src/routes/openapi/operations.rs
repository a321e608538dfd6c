//! One documented operation per route the broker mounts: `#[utoipa::path]`
//! on an empty function per operation (the handlers keep their own
//! signatures and extractors), plus [`ERRORS`], the contract codes each
//! operation can answer, from which `openapi` writes the error responses.
//! The tests compare these operations with `routes::served_routes` both
//! ways, so a route cannot be added or moved without its document.

#![allow(dead_code)] // the functions exist for their `#[utoipa::path]` only

use utoipa::IntoParams;

use super::schemas::*;
use crate::domain::Id;
use crate::recording::{Started, Status};
use crate::sessions::SessionRecord;

/// Codes of every call that reads a JSON body.
const JSON_BODY: &[&str] = &[
    "invalid_json",
    "unsupported_media_type",
    "invalid_request",
    "payload_too_large",
    "request_timeout",
];
/// A management call: the API key (the document lists both schemes).
const KEY: &[&str] = &["unauthorized"];
/// Calls that read or write storage.
const STORE: &[&str] = &["storage_unavailable", "internal_error"];
/// Recording calls taking the API key or the recording's upload token.
const UPLOADER: &[&str] = &[
    "unauthorized",
    "invalid_token",
    "recording_forbidden",
    "recording_not_found",
];
/// A finished recording's download.
const DOWNLOAD: &[&str] = &[
    "invalid_id",
    "recording_not_found",
    "range_not_satisfiable",
    "internal_error",
];

/// The console's files: 404 while `console.enabled` is off.
const CONSOLE: &[&str] = &["not_found"];

/// The codes each operation (by `operationId`) can answer besides 503
/// `overloaded`, which every operation outside `overload::EXEMPT` can, 403
/// `origin_forbidden`, which every operation can (the CORS layer), and
/// the route-level 404 `not_found` and 405 `method_not_allowed`. An
/// operation answering `unauthorized` takes the API key; one answering
/// `rate_limited` carries the `RateLimit-*` headers on success too.
pub(super) const ERRORS: &[(&str, &[&[&str]])] = &[
    ("health", &[]),
    ("live", &[]),
    ("ready", &[]),
    ("storage_status", &[]),
    ("metrics", &[]),
    ("openapi", &[]),
    (
        "issue_token",
        &[
            JSON_BODY,
            KEY,
            STORE,
            &["missing_session_id", "invalid_id", "invalid_ttl"],
            &["rate_limited"],
        ],
    ),
    ("fetch_token", &[STORE, &["invalid_id", "no_rtc_token"]]),
    ("revoke_session_token", &[KEY, STORE, &["invalid_id"]]),
    (
        "verify_token",
        &[JSON_BODY, STORE, &["missing_token", "invalid_token"]],
    ),
    (
        "revoke_token",
        &[JSON_BODY, KEY, STORE, &["missing_token", "invalid_token"]],
    ),
    ("jwks", &[&["not_found"]]),
    (
        "create_session",
        &[
            JSON_BODY,
            KEY,
            STORE,
            &[
                "invalid_id",
                "invalid_ttl",
                "session_exists",
                "rate_limited",
            ],
        ],
    ),
    (
        "get_session",
        &[STORE, &["invalid_id", "session_not_found"]],
    ),
    (
        "patch_session",
        &[
            JSON_BODY,
            KEY,
            STORE,
            &["invalid_id", "session_not_found", "rate_limited"],
        ],
    ),
    (
        "add_member",
        &[
            JSON_BODY,
            KEY,
            STORE,
            &["invalid_id", "session_not_found", "member_exists"],
            &["session_full", "rate_limited"],
        ],
    ),
    (
        "remove_member",
        &[
            KEY,
            STORE,
            &["invalid_id", "session_not_found", "member_not_found"],
            &["rate_limited"],
        ],
    ),
    (
        "end_session",
        &[
            KEY,
            STORE,
            &["invalid_id", "session_not_found", "rate_limited"],
        ],
    ),
    (
        "room_socket",
        &[
            STORE,
            &["invalid_id", "invalid_request", "invalid_token"],
            &["origin_forbidden", "room_forbidden", "room_full"],
            &["member_banned", "shutting_down"],
        ],
    ),
    ("publish", &[JSON_BODY, KEY, STORE, &["invalid_id"]]),
    ("room_members", &[STORE, &["invalid_id"]]),
    (
        "kick_member",
        &[KEY, STORE, &["invalid_id", "invalid_request"]],
    ),
    (
        "start_recording",
        &[JSON_BODY, KEY, STORE, &["invalid_id", "merge_unavailable"]],
    ),
    (
        "upload_chunk",
        &[
            UPLOADER,
            STORE,
            &["invalid_id", "invalid_request", "merge_unavailable"],
            &["recording_not_active", "empty_chunk", "chunk_too_large"],
            &["too_many_chunks", "upload_timeout"],
        ],
    ),
    (
        "stop_recording",
        &[UPLOADER, STORE, &["invalid_id", "merge_unavailable"]],
    ),
    ("recording_status", &[UPLOADER, STORE, &["invalid_id"]]),
    (
        "recording_socket",
        &[
            UPLOADER,
            STORE,
            &["invalid_id", "invalid_request", "merge_unavailable"],
            &["origin_forbidden"],
        ],
    ),
    ("download", &[DOWNLOAD]),
    ("download_head", &[DOWNLOAD]),
    ("console_page", &[CONSOLE]),
    ("console_main", &[CONSOLE]),
    ("console_room", &[CONSOLE]),
    ("console_recording", &[CONSOLE]),
    ("console_clock", &[CONSOLE]),
    ("console_common", &[CONSOLE]),
    ("console_style", &[CONSOLE]),
    ("console_icon", &[CONSOLE]),
];

/// The session of a token.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    session_id: Id,
}

/// A session.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SessionPath {
    /// The session id.
    id: Id,
}

/// A member of a session.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MemberPath {
    /// The session id.
    id: Id,
    member_id: Id,
}

/// A room.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RoomPath {
    room: Id,
}

/// A member of a room.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RoomMemberPath {
    room: Id,
    /// The member id (the token's `sub`).
    member_id: Id,
}

/// A kick's ban.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KickQuery {
    /// Refuse the member's joins (403 `member_banned`) for this many
    /// seconds; 0 or absent = no ban.
    #[param(minimum = 0, maximum = 86400)]
    ban_seconds: Option<u64>,
}

/// A recording.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RecordingPath {
    /// The `record_id`.
    id: Id,
}

/// A finished recording.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DownloadPath {
    /// The key in `download_url` (not the record id).
    key: Id,
}

/// The handshake of a room client.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoomSocketQuery {
    /// The RTC token, for clients that cannot set `Authorization`.
    token: Option<String>,
    /// Resume: the last message id received.
    since: Option<u64>,
    /// Resume: the `epoch` of the welcome that `since` belongs to
    /// (needs `since`).
    #[param(max_length = 64, pattern = "^[A-Za-z0-9_-]*$")]
    epoch: Option<String>,
}

/// The handshake of a recorder.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordingSocketQuery {
    /// The upload token, for clients that cannot set `Authorization`.
    token: Option<String>,
}

/// Conditional and partial downloads.
#[derive(IntoParams)]
#[into_params(parameter_in = Header, names("Range", "If-Range", "If-None-Match"))]
pub struct DownloadHeaders(
    /// One range, `bytes=<start>-<end>`, `bytes=<start>-` or `bytes=-<suffix>`.
    Option<String>,
    /// An ETag: the range applies only while the file still has it.
    Option<String>,
    /// ETags: 304 when one matches.
    Option<String>,
);

/// Broker health: storage, uptime, rooms and recordings.
#[utoipa::path(
    get, path = "/api/health", tag = "operations", operation_id = "health",
    responses((status = 200, description = "the instance's health", body = Health))
)]
pub fn health() {}

/// Liveness: 200 while the process serves.
#[utoipa::path(
    get, path = "/health/live", tag = "operations", operation_id = "live",
    responses((status = 200, description = "alive", body = Live))
)]
pub fn live() {}

/// Readiness: 503 while starting, shutting down or without its storage.
#[utoipa::path(
    get, path = "/health/ready", tag = "operations", operation_id = "ready",
    responses(
        (status = 200, description = "ready", body = Ready),
        (status = 503, description = "not ready", body = Ready),
    )
)]
pub fn ready() {}

/// The storage backend: mode, connection, fallback and replay counts.
#[utoipa::path(
    get, path = "/api/storage/status", tag = "operations", operation_id = "storage_status",
    responses((status = 200, description = "the storage backend's state", body = StorageStatus))
)]
pub fn storage_status() {}

/// Prometheus metrics (text exposition format).
#[utoipa::path(
    get, path = "/metrics", tag = "operations", operation_id = "metrics",
    responses((
        status = 200, description = "metric families", body = String,
        content_type = "text/plain; version=0.0.4"
    ))
)]
pub fn metrics() {}

/// This document.
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "operations", operation_id = "openapi",
    responses((status = 200, description = "OpenAPI 3.1", body = Object))
)]
pub fn openapi() {}

/// Issues an RTC token (a JWT) and stores it as the session's live token.
#[utoipa::path(
    post, path = "/api/voice/token", tag = "tokens", operation_id = "issue_token",
    request_body = IssueTokenRequest,
    responses((status = 200, description = "the issued token", body = IssuedToken))
)]
pub fn issue_token() {}

/// The session's live token, ours or a Node deployment's.
#[utoipa::path(
    get, path = "/api/voice/token/{session_id}", tag = "tokens", operation_id = "fetch_token",
    params(TokenPath),
    responses((status = 200, description = "the live token", body = StoredToken))
)]
pub fn fetch_token() {}

/// Removes the session's token and revokes it (204 also when none was live).
#[utoipa::path(
    delete, path = "/api/voice/token/{session_id}", tag = "tokens",
    operation_id = "revoke_session_token", params(TokenPath),
    responses((status = 204, description = "revoked"))
)]
pub fn revoke_session_token() {}

/// Verifies a token (for media servers): signature, claims, revocation.
#[utoipa::path(
    post, path = "/api/tokens/verify", tag = "tokens", operation_id = "verify_token",
    request_body = TokenRequest,
    responses((status = 200, description = "the token verified", body = Verified))
)]
pub fn verify_token() {}

/// Revokes a presented token of ours (RTC or upload) by its `jti`.
#[utoipa::path(
    post, path = "/api/tokens/revoke", tag = "tokens", operation_id = "revoke_token",
    request_body = TokenRequest,
    responses((status = 204, description = "revoked"))
)]
pub fn revoke_token() {}

/// The public keys when signing with a key pair (404 `not_found` with HS256).
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "tokens", operation_id = "jwks",
    responses((status = 200, description = "the public keys", body = Jwks))
)]
pub fn jwks() {}

/// Creates a session record (the id is generated when absent).
#[utoipa::path(
    post, path = "/api/sessions", tag = "sessions", operation_id = "create_session",
    request_body = CreateSessionRequest,
    responses((status = 201, description = "the new record", body = SessionRecord))
)]
pub fn create_session() {}

/// A session record.
#[utoipa::path(
    get, path = "/api/sessions/{id}", tag = "sessions", operation_id = "get_session",
    params(SessionPath),
    responses((status = 200, description = "the record", body = SessionRecord))
)]
pub fn get_session() {}

/// Merges metadata into a session (slides its TTL).
#[utoipa::path(
    patch, path = "/api/sessions/{id}", tag = "sessions", operation_id = "patch_session",
    params(SessionPath), request_body = PatchSessionRequest,
    responses((status = 200, description = "the merged record", body = SessionRecord))
)]
pub fn patch_session() {}

/// Adds a member (slides the TTL).
#[utoipa::path(
    post, path = "/api/sessions/{id}/members", tag = "sessions", operation_id = "add_member",
    params(SessionPath), request_body = AddMemberRequest,
    responses((status = 201, description = "the record with the member", body = SessionRecord))
)]
pub fn add_member() {}

/// Removes a member (slides the TTL).
#[utoipa::path(
    delete, path = "/api/sessions/{id}/members/{member_id}", tag = "sessions",
    operation_id = "remove_member", params(MemberPath),
    responses((status = 200, description = "the record without it", body = SessionRecord))
)]
pub fn remove_member() {}

/// Ends a session: its token is revoked, then the record removed. Takes
/// no body.
#[utoipa::path(
    post, path = "/api/sessions/{id}/end", tag = "sessions", operation_id = "end_session",
    params(SessionPath),
    responses((status = 200, description = "ended", body = Ended))
)]
pub fn end_session() {}

/// Joins a room over WebSocket (frames: SPEC section 6). The RTC token's
/// `room` must be this room; it comes in `Authorization: Bearer` or
/// `?token=`. Every check is made before the upgrade.
#[utoipa::path(
    get, path = "/ws/rooms/{room}", tag = "rooms", operation_id = "room_socket",
    params(RoomPath, RoomSocketQuery), security(("bearer" = [])),
    responses((status = 101, description = "Switching Protocols: the room's WebSocket"))
)]
pub fn room_socket() {}

/// Publishes into a room from a back end.
#[utoipa::path(
    post, path = "/api/rooms/{room}/publish", tag = "rooms", operation_id = "publish",
    params(RoomPath), request_body = PublishRequest,
    responses((status = 202, description = "published (or held for Redis)", body = Published))
)]
pub fn publish() {}

/// The room's members across all instances.
#[utoipa::path(
    get, path = "/api/rooms/{room}/members", tag = "rooms", operation_id = "room_members",
    params(RoomPath),
    responses((status = 200, description = "the members", body = RoomMembers))
)]
pub fn room_members() {}

/// Removes a member from a room: its sockets in the room close with 4004
/// on every instance within a second; with `ban_seconds` its joins are
/// refused (403 `member_banned`) until the ban ends.
#[utoipa::path(
    delete, path = "/api/rooms/{room}/members/{member_id}", tag = "rooms",
    operation_id = "kick_member", params(RoomMemberPath, KickQuery),
    responses((status = 202, description = "kicked", body = Kicked))
)]
pub fn kick_member() {}

/// Starts a recording; the body is optional.
#[utoipa::path(
    post, path = "/api/recordings", tag = "recordings", operation_id = "start_recording",
    request_body(content = Option<StartRecordingRequest>, content_type = "application/json"),
    responses((status = 201, description = "recording", body = Started))
)]
pub fn start_recording() {}

/// Uploads one chunk (the raw bytes); API key or upload token.
#[utoipa::path(
    post, path = "/api/recordings/{id}/chunks", tag = "recordings", operation_id = "upload_chunk",
    params(RecordingPath),
    request_body(content = Binary, content_type = "application/octet-stream"),
    responses((status = 201, description = "the chunk is stored", body = ChunkSaved))
)]
pub fn upload_chunk() {}

/// Stops a recording; the merge runs in the background. Takes no body.
#[utoipa::path(
    post, path = "/api/recordings/{id}/stop", tag = "recordings", operation_id = "stop_recording",
    params(RecordingPath),
    responses((status = 202, description = "merging", body = Stopped))
)]
pub fn stop_recording() {}

/// A recording's state, from any instance.
#[utoipa::path(
    get, path = "/api/recordings/{id}/status", tag = "recordings",
    operation_id = "recording_status", params(RecordingPath),
    responses((status = 200, description = "the recording's state", body = Status))
)]
pub fn recording_status() {}

/// The recorder's WebSocket: binary frames are chunks, `{"event":"stop"}`
/// stops; events come back as text frames (SPEC section 7).
#[utoipa::path(
    get, path = "/ws/recordings/{id}", tag = "recordings", operation_id = "recording_socket",
    params(RecordingPath, RecordingSocketQuery),
    responses((status = 101, description = "Switching Protocols: the recording's WebSocket"))
)]
pub fn recording_socket() {}

/// Downloads a finished recording, whole or one range.
#[utoipa::path(
    get, path = "/recordings/download/{key}", tag = "recordings", operation_id = "download",
    params(DownloadPath, DownloadHeaders),
    responses(
        (
            status = 200, description = "the whole file", body = Binary,
            content_type = "video/webm",
            headers(("ETag" = String), ("Accept-Ranges" = String, description = "bytes"))
        ),
        (
            status = 206, description = "one range", body = Binary, content_type = "video/webm",
            headers(
                ("ETag" = String),
                ("Content-Range" = String, description = "bytes <start>-<end>/<size>")
            )
        ),
        (
            status = 304, description = "Not Modified (If-None-Match)",
            headers(("ETag" = String))
        ),
    )
)]
pub fn download() {}

/// The download's headers without its body.
#[utoipa::path(
    head, path = "/recordings/download/{key}", tag = "recordings", operation_id = "download_head",
    params(DownloadPath, DownloadHeaders),
    responses(
        (
            status = 200, description = "as GET, without the body",
            headers(("ETag" = String), ("Content-Length" = u64))
        ),
        (
            status = 206, description = "as GET, without the body",
            headers(("Content-Range" = String))
        ),
        (status = 304, description = "Not Modified (If-None-Match)"),
    )
)]
pub fn download_head() {}
