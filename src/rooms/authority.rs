//! What a room socket may do, and for how long: the verified token as the
//! rooms see it ([`Grant`]), and the narrow handle through which they
//! verify a `refresh` ([`TokenCheck`], implemented over the tokens wing by
//! `startup`, so rooms never reach into it).

use async_trait::async_trait;

/// A verified RTC token, as a room socket needs it.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The token's `sub`: the member id.
    pub member: String,
    pub room: String,
    pub jti: String,
    /// The token's `exp`, unix seconds.
    pub expires_at: u64,
    pub room_join: bool,
    pub can_publish: bool,
}

/// Verification of presented tokens, for rooms.
#[async_trait]
pub trait TokenCheck: Send + Sync + 'static {
    /// Signature, claims and revocation, as for the upgrade; the error is
    /// the detail of the `invalid_token` error frame.
    async fn verify(&self, token: &str) -> Result<Grant, String>;

    /// Whether `jti` is known revoked on this instance (no I/O).
    fn is_revoked(&self, jti: &str) -> bool;

    /// Seconds past `exp` a token is still accepted.
    fn leeway_seconds(&self) -> u64;
}

impl Grant {
    /// Whether `fresh` may replace this grant on a live socket: the same
    /// member and room, and still allowed to join.
    pub fn refreshable_by(&self, fresh: &Grant) -> Result<(), &'static str> {
        if fresh.member != self.member {
            return Err("the token is for another identity");
        }
        if fresh.room != self.room {
            return Err("the token is for another room");
        }
        if !fresh.room_join {
            return Err("the token does not grant room_join");
        }
        Ok(())
    }
}
