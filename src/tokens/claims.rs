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
