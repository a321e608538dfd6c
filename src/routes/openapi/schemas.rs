//! Schemas of the wire forms that handlers build by hand (`json!`) or
//! parse field by field, for the OpenAPI document. Types the handlers
//! serialize as they are (session records, recording status, statistics)
//! derive `ToSchema` where they are defined instead.

#![allow(dead_code)] // only read by the derives: these types are never built

use serde_json::{Map, Value};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::Id;
use crate::error::ERROR_CODES;
use crate::recording::RecordState;
use crate::recording::RecordingStats;
use crate::rooms::RoomStats;
use crate::store::{Migrated, StorageKind};

/// Every error: `{"error": <code>, "detail": <text>}`.
#[derive(ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    error: ErrorCode,
    /// Human-readable; the client's own mistake is explained, faults of
    /// the broker are not (their causes stay in its log).
    detail: String,
}

/// A contract error code (`crate::error::ERROR_CODES`, one list).
pub struct ErrorCode;

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("The contract's error code; each has one status."))
            .enum_values(Some(ERROR_CODES.iter().map(|(code, _)| *code)))
            .into()
    }
}

impl ToSchema for ErrorCode {}

/// Raw bytes (a recording chunk, a finished recording).
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for Binary {}

/// `GET /api/health`.
#[derive(ToSchema)]
pub struct Health {
    ok: bool,
    uptime_s: u64,
    server_id: String,
    storage: StorageKind,
    /// `null` without Redis.
    redis: Option<RedisHealth>,
    /// e.g. `using_in_memory_storage`, `redis_unavailable_serving_from_memory`.
    warnings: Vec<String>,
    rooms: RoomStats,
    recordings: RecordingStats,
}

/// The Redis connection as health reports it.
#[derive(ToSchema)]
pub struct RedisHealth {
    /// `single`, `cluster` or `sentinel`.
    mode: String,
    connected: bool,
    /// The current master (sentinel mode).
    master: Option<String>,
    cluster_state: Option<String>,
    /// Why the instance serves from memory although Redis is configured.
    fallback_reason: Option<String>,
    last_error: Option<String>,
}

/// `GET /health/live`.
#[derive(ToSchema)]
pub struct Live {
    ok: bool,
}

/// `GET /health/ready`: `reason` (`starting`, `shutting_down`,
/// `storage_unavailable`) only when not ready.
#[derive(ToSchema)]
pub struct Ready {
    ready: bool,
    reason: Option<String>,
}

/// `GET /api/storage/status`.
#[derive(ToSchema)]
pub struct StorageStatus {
    storage: StorageKind,
    /// `single`, `cluster` or `sentinel`; `null` for the in-memory store.
    mode: Option<String>,
    connected: bool,
    master: Option<String>,
    cluster_state: Option<String>,
    fallback_reason: Option<String>,
    last_error: Option<String>,
    /// Unix seconds since this state holds.
    since: u64,
    migrated: Migrated,
    /// Entries held in memory (in-memory store only).
    entries: Option<u64>,
    /// Outage writes waiting for Redis (fallback only).
    pending_replay: Option<u64>,
}

/// What a token allows; each absent grant defaults to `true`.
#[derive(ToSchema)]
pub struct Grants {
    #[schema(required = false, default = true)]
    room_join: bool,
    #[schema(required = false, default = true)]
    can_publish: bool,
    #[schema(required = false, default = true)]
    can_subscribe: bool,
    #[schema(required = false, default = true)]
    can_publish_data: bool,
}

/// `POST /api/voice/token`.
#[derive(ToSchema)]
pub struct IssueTokenRequest {
    /// Required (400 `missing_session_id`).
    session_id: Id,
    /// The token's `sub`; default `anonymous`.
    #[schema(min_length = 1, max_length = 256)]
    identity: Option<String>,
    /// Default: the `session_id`.
    room: Option<Id>,
    /// 1 to `tokens.max_ttl_seconds` (default 3600); default 60.
    #[schema(minimum = 1)]
    ttl_seconds: Option<u64>,
    grants: Option<Grants>,
}

/// An issued token.
#[derive(ToSchema)]
pub struct IssuedToken {
    /// The JWT.
    rtc_token: String,
    session_id: Id,
    identity: String,
    room: Id,
    /// Unix seconds.
    expires_at: u64,
    opts: TokenOpts,
}

/// The Node deployments' shape, kept for their clients.
#[derive(ToSchema)]
pub struct TokenOpts {
    expires_at: u64,
}

/// The live token of a session (ours or a Node deployment's).
#[derive(ToSchema)]
pub struct StoredToken {
    rtc_token: String,
    session_id: Id,
    /// The token's `exp`; `null` when it carries none.
    expires_at: Option<u64>,
}

/// `POST /api/tokens/verify` and `POST /api/tokens/revoke`.
#[derive(ToSchema)]
pub struct TokenRequest {
    /// Required (400 `missing_token`).
    token: String,
}

/// A token that verified.
#[derive(ToSchema)]
pub struct Verified {
    /// Always `true` (an invalid token is 401 `invalid_token`).
    valid: bool,
    claims: Claims,
}

/// The claims of an RTC token.
#[derive(ToSchema)]
pub struct Claims {
    iss: String,
    aud: String,
    /// The identity.
    sub: String,
    /// The session id.
    sid: String,
    room: String,
    grants: Grants,
    iat: u64,
    nbf: u64,
    exp: u64,
    /// Revocation is by `jti`.
    jti: String,
}

/// The public keys that verify tokens now (RFC 7517), signing key first.
#[derive(ToSchema)]
pub struct Jwks {
    /// JWKs with `kty`, `kid`, `alg`, `use` and the key's own members.
    keys: Vec<Map<String, Value>>,
}

/// `POST /api/sessions`.
#[derive(ToSchema)]
pub struct CreateSessionRequest {
    /// Generated (UUID v4) when absent.
    session_id: Option<Id>,
    /// 1 to `sessions.max_ttl_seconds` (default 86400); default 3600.
    #[schema(minimum = 1)]
    ttl_seconds: Option<u64>,
    metadata: Option<Map<String, Value>>,
}

/// `PATCH /api/sessions/{id}`: a shallow merge; a `null` value removes
/// the key.
#[derive(ToSchema)]
pub struct PatchSessionRequest {
    metadata: Map<String, Value>,
}

/// `POST /api/sessions/{id}/members`.
#[derive(ToSchema)]
pub struct AddMemberRequest {
    member_id: Id,
    #[schema(min_length = 1, max_length = 256)]
    display_name: Option<String>,
    #[schema(min_length = 1, max_length = 64)]
    role: Option<String>,
}

/// `POST /api/sessions/{id}/end`.
#[derive(ToSchema)]
pub struct Ended {
    /// `ended`.
    summary: String,
}

/// `POST /api/rooms/{room}/publish`.
#[derive(ToSchema)]
pub struct PublishRequest {
    /// Any JSON value; required.
    data: Value,
    /// Default `server`.
    #[schema(min_length = 1, max_length = 256)]
    from: Option<String>,
}

/// A published message: its id in the room, or `null` with `buffered`
/// while Redis is away (the id is assigned when Redis takes it).
#[derive(ToSchema)]
pub struct Published {
    id: Option<u64>,
    buffered: Option<bool>,
}

/// A kick: the room, the member, and with a ban until when (unix seconds).
#[derive(ToSchema)]
pub struct Kicked {
    room: Id,
    member_id: Id,
    banned_until: Option<u64>,
}

/// `GET /api/rooms/{room}/members`, across all instances.
#[derive(ToSchema)]
pub struct RoomMembers {
    room: Id,
    members: Vec<RoomMember>,
}

/// A room member and its open connections.
#[derive(ToSchema)]
pub struct RoomMember {
    member_id: String,
    connections: u64,
}

/// `POST /api/recordings`; unknown fields are refused.
#[derive(ToSchema)]
pub struct StartRecordingRequest {
    session_id: Option<Id>,
}

/// A stored chunk.
#[derive(ToSchema)]
pub struct ChunkSaved {
    record_id: Id,
    /// From 0, never reused.
    index: u64,
}

/// A stop: the merge runs in the background.
#[derive(ToSchema)]
pub struct Stopped {
    record_id: Id,
    state: RecordState,
}
