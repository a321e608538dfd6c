//! How writes made during a Redis outage are reconciled with Redis when it
//! returns (SPEC section 10): the newer write wins, by `iat` for tokens and
//! `updated_at` for sessions, and deleting a token revokes its `jti`.

use std::time::Duration;

use crate::clock::unix_now;
use crate::sessions::SessionRecord;
use crate::store::{keys, Key, KeyKind, Reconcile};
use crate::tokens::stored_claims;

/// The broker's replay rules, handed to the fallback store.
#[derive(Debug, Clone, Copy)]
pub struct DomainReconcile {
    /// Verification leeway: a revocation outlives the token by this much.
    pub leeway_seconds: u64,
}

impl Reconcile for DomainReconcile {
    fn written_at_ms(&self, key: &Key, value: &str) -> Option<u64> {
        match key.kind() {
            KeyKind::Token => stored_claims(value).map(|c| c.iat.saturating_mul(1000)),
            KeyKind::Session => serde_json::from_str::<SessionRecord>(value)
                .ok()
                .map(|r| r.updated_at.saturating_mul(1000)),
            KeyKind::Revocation | KeyKind::Counter => None,
        }
    }

    fn on_delete(&self, key: &Key, value: &str) -> Vec<(Key, String, Duration)> {
        if key.kind() != KeyKind::Token {
            return Vec::new();
        }
        let Some(claims) = stored_claims(value) else {
            return Vec::new();
        };
        let remaining = claims.exp.saturating_sub(unix_now()) + self.leeway_seconds;
        vec![(
            keys::revoked_token(&claims.jti),
            "1".to_string(),
            Duration::from_secs(remaining.max(1)),
        )]
    }
}
