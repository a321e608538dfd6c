use serde::{Deserialize, Serialize};

/// What the holder of a token may do in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grants {
    pub room_join: bool,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
}

impl Default for Grants {
    /// Everything allowed, the contract's default when a request gives none.
    fn default() -> Self {
        Self {
            room_join: true,
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
        }
    }
}

/// The JWT claims of an RTC token (SPEC section 4). Every field is required
/// when verifying, so a token missing one is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The identity the token was issued to.
    pub sub: String,
    /// The session id.
    pub sid: String,
    pub room: String,
    pub grants: Grants,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// Unique token id; revocation is by `jti`.
    pub jti: String,
}

/// What an upload token's `use` claim says; nothing else is accepted.
pub const UPLOAD_USE: &str = "upload";

/// The claims of a recording's upload token (SPEC section 7): `rec` and
/// `use` instead of an RTC token's `sid`, `room` and `grants`, so neither
/// kind verifies as the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadClaims {
    pub iss: String,
    pub aud: String,
    /// The recording this token may upload to.
    pub rec: String,
    #[serde(rename = "use")]
    pub usage: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
}

/// What the broker reads from a token in its own store: only the times and
/// the id, each optional, so a token written by the Node deployments (no
/// `iss`, `aud`, `nbf`, `grants`, maybe no `room`) is as readable as ours.
/// Nothing here is trusted for authorisation; `POST /api/tokens/verify`
/// decodes the full [`Claims`] with every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredClaims {
    /// Issue time (unix seconds), when present and numeric.
    pub iat: Option<u64>,
    /// Expiry (unix seconds), when present and numeric.
    pub exp: Option<u64>,
    /// Token id, when present and a string.
    pub jti: Option<String>,
}

/// The wire form: any JSON object (a map, not a derived struct, which
/// would also accept an array); fields of the wrong type read as absent.
#[derive(Deserialize)]
pub(super) struct RawStoredClaims(serde_json::Map<String, serde_json::Value>);

impl From<RawStoredClaims> for StoredClaims {
    fn from(RawStoredClaims(map): RawStoredClaims) -> Self {
        let date = |name| map.get(name).and_then(numeric_date);
        Self {
            iat: date("iat"),
            exp: date("exp"),
            jti: map
                .get("jti")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string),
        }
    }
}

/// A JWT NumericDate as whole unix seconds: an integer, or a fraction
/// rounded down (negative ones read as 0, i.e. long past). Anything else,
/// a numeric string included, is not a date.
fn numeric_date(value: &serde_json::Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|f| f.max(0.0) as u64)
    })
}
