//! How writes made during a Redis outage are reconciled with Redis when it
//! returns (SPEC section 10): the newer write wins, by `iat` for tokens and
//! `updated_at` for sessions and recordings, and deleting a token revokes
//! its `jti`.

use std::time::Duration;

use crate::recording::Record;
use crate::sessions::SessionRecord;
use crate::store::{Key, KeyKind, Reconcile};
use crate::tokens::{revocation, stored_claims};

/// The broker's replay rules, handed to the fallback store.
#[derive(Debug, Clone, Copy)]
pub struct DomainReconcile {
    /// Verification leeway: a revocation outlives the token by this much.
    pub leeway_seconds: u64,
}

impl Reconcile for DomainReconcile {
    fn written_at_ms(&self, key: &Key, value: &str) -> Option<u64> {
        match key.kind() {
            // Ours or a Node deployment's: any token with a numeric `iat`.
            KeyKind::Token => stored_claims(value)
                .and_then(|c| c.iat)
                .map(|iat| iat.saturating_mul(1000)),
            KeyKind::Session => serde_json::from_str::<SessionRecord>(value)
                .ok()
                .map(|r| r.updated_at.saturating_mul(1000)),
            KeyKind::Recording => serde_json::from_str::<Record>(value)
                .ok()
                .map(|r| r.updated_at_ms),
            KeyKind::Revocation | KeyKind::Counter => None,
        }
    }

    fn on_delete(&self, key: &Key, value: &str) -> Vec<(Key, String, Duration)> {
        if key.kind() != KeyKind::Token {
            return Vec::new();
        }
        stored_claims(value)
            .and_then(|c| revocation(&c, self.leeway_seconds))
            .map(|(key, ttl)| (key, "1".to_string(), ttl))
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::clock::unix_now;
    use crate::domain::Id;
    use crate::store::keys;

    const RULES: DomainReconcile = DomainReconcile { leeway_seconds: 5 };

    fn token_key() -> Key {
        keys::token(&Id::parse("s1").unwrap())
    }

    /// A token as the Node deployments write it: no iss, aud, nbf, grants.
    fn node_token(iat: u64, exp: u64) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "anonymous", "sid": "s1", "iat": iat, "exp": exp, "jti": "node-jti"}),
            &EncodingKey::from_secret(b"shared"),
        )
        .unwrap()
    }

    #[test]
    fn a_node_token_replays_by_its_iat() {
        let now = unix_now();
        assert_eq!(
            RULES.written_at_ms(&token_key(), &node_token(now, now + 60)),
            Some(now * 1000)
        );
        assert_eq!(RULES.written_at_ms(&token_key(), "not a jwt"), None);
    }

    #[test]
    fn deleting_a_node_token_revokes_its_jti() {
        let now = unix_now();
        let extra = RULES.on_delete(&token_key(), &node_token(now, now + 60));
        assert_eq!(extra.len(), 1);
        let (key, value, ttl) = &extra[0];
        assert_eq!(
            (key.as_str(), value.as_str()),
            ("rtc:revoked:node-jti", "1")
        );
        assert!((64..=65).contains(&ttl.as_secs()), "{ttl:?}");
        assert!(RULES.on_delete(&token_key(), "not a jwt").is_empty());
    }
}
