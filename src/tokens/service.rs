use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::claims::RawStoredClaims;
use super::{
    Claims, Grants, Revocations, SigningKeys, StoredClaims, TokenError, UploadClaims, UPLOAD_USE,
};
use crate::clock::unix_now;
use crate::config::TokenSettings;
use crate::domain::{Id, Ttl};
use crate::store::{keys, Key, Store};

/// A validated request for a new token.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub session_id: Id,
    pub identity: String,
    pub room: Id,
    pub ttl: Ttl,
    pub grants: Grants,
}

/// A freshly issued token and what the caller needs to know about it.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    pub rtc_token: String,
    pub session_id: Id,
    pub identity: String,
    pub room: Id,
    pub expires_at: u64,
}

/// The live token stored for a session, whoever wrote it (this broker or
/// a Node deployment on the same Redis).
#[derive(Debug, Clone, Serialize)]
pub struct StoredToken {
    pub rtc_token: String,
    pub session_id: Id,
    /// The token's `exp`; `None` (JSON `null`) when the token carries no
    /// numeric `exp`, in which case only the key's TTL bounds its life.
    pub expires_at: Option<u64>,
}

/// Issues, stores, fetches, revokes and verifies RTC tokens. Cheap to clone.
#[derive(Clone)]
pub struct TokenService {
    keys: Arc<SigningKeys>,
    store: Arc<dyn Store>,
    revocations: Revocations,
    issuer: String,
    audience: String,
    leeway: u64,
}

impl TokenService {
    /// Issuer, audience and leeway come from `settings`; the store is shared with sessions.
    pub fn new(
        keys: Arc<SigningKeys>,
        store: Arc<dyn Store>,
        revocations: Revocations,
        settings: &TokenSettings,
    ) -> Self {
        Self {
            keys,
            store,
            revocations,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.leeway_seconds,
        }
    }

    /// The key set, for the JWKS endpoint.
    pub fn keys(&self) -> &SigningKeys {
        &self.keys
    }

    /// Signs a token and stores it as the session's live token (replacing
    /// any earlier one) for exactly its lifetime.
    #[tracing::instrument(skip_all, fields(session_id = %req.session_id))]
    pub async fn issue(&self, req: IssueRequest) -> Result<IssuedToken, TokenError> {
        let now = unix_now();
        let expires_at = now + req.ttl.secs();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: req.identity.clone(),
            sid: req.session_id.to_string(),
            room: req.room.to_string(),
            grants: req.grants,
            iat: now,
            nbf: now,
            exp: expires_at,
            jti: Id::generate().to_string(),
        };
        let token = self.keys.sign(&claims)?;
        self.store
            .set(&keys::token(&req.session_id), &token, req.ttl.duration())
            .await?;
        Ok(IssuedToken {
            rtc_token: token,
            session_id: req.session_id,
            identity: req.identity,
            room: req.room,
            expires_at,
        })
    }

    /// The session's live token, byte for byte as stored. Any JWT counts,
    /// ours or a Node deployment's: it is not verified here (see
    /// [`stored_claims`]). One whose `exp` has passed is not live; one
    /// without a numeric `exp` is live for as long as the key exists.
    pub async fn fetch(&self, session_id: &Id) -> Result<StoredToken, TokenError> {
        let key = keys::token(session_id);
        let token = self.store.get(&key).await?.ok_or(TokenError::NoToken)?;
        let Some(claims) = stored_claims(&token) else {
            tracing::warn!(%key, "stored value is not a JWT; answering no_rtc_token");
            return Err(TokenError::NoToken);
        };
        if claims.exp.is_some_and(|exp| exp <= unix_now()) {
            return Err(TokenError::NoToken);
        }
        Ok(StoredToken {
            rtc_token: token,
            session_id: session_id.clone(),
            expires_at: claims.exp,
        })
    }

    /// Removes the session's token and revokes its `jti` until it would have
    /// expired. The revocation is written before the token is removed, so a
    /// failure in between leaves the token revoked rather than live.
    #[tracing::instrument(skip_all, fields(session_id = %session_id))]
    pub async fn revoke(&self, session_id: &Id) -> Result<(), TokenError> {
        let key = keys::token(session_id);
        let Some(token) = self.store.get(&key).await? else {
            // Nothing live here; but a store in fallback may not see a token
            // only Redis holds, so leave a delete for its replay.
            if !self.store.authoritative() {
                self.store.delete(&key).await?;
            }
            return Ok(());
        };
        if let Some(claims) = stored_claims(&token) {
            self.write_revocation(&claims).await?;
        }
        // Only remove the token we revoked: a newer one issued meanwhile stays.
        self.store
            .compare_and_swap(&key, &token, None, Duration::from_secs(1))
            .await?;
        Ok(())
    }

    /// Verifies a presented token: signature, claims, and revocation.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims: Claims = self.keys.verify(token)?;
        self.refuse_revoked(&claims.jti).await?;
        Ok(claims)
    }

    /// Signs an upload token for one recording (not stored: it is handed
    /// to the recorder, which presents it with every chunk).
    pub fn issue_upload(&self, record_id: &Id, ttl: Duration) -> Result<String, TokenError> {
        let now = unix_now();
        self.keys.sign(&UploadClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            rec: record_id.to_string(),
            usage: UPLOAD_USE.to_string(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
            jti: Id::generate().to_string(),
        })
    }

    /// Verifies an upload token: signature, claims, `use`, and revocation.
    /// An RTC token lacks `rec` and `use`, so it is refused here.
    pub async fn verify_upload(&self, token: &str) -> Result<UploadClaims, TokenError> {
        let claims: UploadClaims = self.keys.verify(token)?;
        if claims.usage != UPLOAD_USE {
            return Err(TokenError::Invalid("not an upload token".into()));
        }
        self.refuse_revoked(&claims.jti).await?;
        Ok(claims)
    }

    /// Revokes a presented token (one of ours, RTC or upload) until it
    /// would have expired; its stored copy, if any, is left to expire.
    #[tracing::instrument(skip_all)]
    pub async fn revoke_token(&self, token: &str) -> Result<(), TokenError> {
        let claims: RevocableClaims = self.keys.verify(token)?;
        self.write_revocation(&StoredClaims {
            iat: None,
            exp: Some(claims.exp),
            jti: Some(claims.jti),
        })
        .await
    }

    /// The revocation marker (the authority while Redis answers), then the
    /// local copy that keeps it refused through an outage.
    async fn write_revocation(&self, claims: &StoredClaims) -> Result<(), TokenError> {
        let Some((revoked, ttl)) = revocation(claims, self.leeway) else {
            return Ok(());
        };
        self.store.set(&revoked, "1", ttl).await?;
        if let Some(jti) = &claims.jti {
            self.revocations.add(jti, unix_now() + ttl.as_secs()).await;
        }
        Ok(())
    }

    /// The instance's copy of the live revocations (tests, health).
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    async fn refuse_revoked(&self, jti: &str) -> Result<(), TokenError> {
        let jti = Id::parse(jti).map_err(|_| TokenError::Invalid("bad jti".into()))?;
        if self.revocations.is_revoked(jti.as_str()) {
            return Err(TokenError::Invalid("token revoked".into()));
        }
        if self
            .store
            .get(&keys::revoked_token(jti.as_str()))
            .await?
            .is_some()
        {
            return Err(TokenError::Invalid("token revoked".into()));
        }
        Ok(())
    }
}

/// What revoking a presented token needs from it (any kind of ours).
#[derive(serde::Deserialize)]
struct RevocableClaims {
    jti: String,
    exp: u64,
}

/// Reads the times and id of a token from our own store, written by this
/// broker or by a Node deployment sharing the Redis. No signature check:
/// the value came from our own store, and a rotated key must not make a
/// live token unreadable. `None` when the value is not a JWT (three
/// base64url parts, a JSON header, a JSON object as claims).
pub fn stored_claims(token: &str) -> Option<StoredClaims> {
    jsonwebtoken::dangerous::insecure_decode::<RawStoredClaims>(token)
        .ok()
        .map(|d| d.claims.into())
}

/// The revocation marker that goes with removing a stored token: its `jti`
/// key and a TTL reaching `leeway_seconds` past the token's expiry (at
/// least 1 s). `None` when verification could never accept the token
/// anyway, so there is nothing to revoke: no `jti` that is an id, or no
/// `exp` (verify requires both).
pub fn revocation(claims: &StoredClaims, leeway_seconds: u64) -> Option<(Key, Duration)> {
    let jti = Id::parse(claims.jti.as_deref()?).ok()?;
    let remaining = claims.exp?.saturating_sub(unix_now()) + leeway_seconds;
    Some((
        keys::revoked_token(jti.as_str()),
        Duration::from_secs(remaining.max(1)),
    ))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use serde_json::{json, Value};

    use super::*;

    /// Signs `claims` the way the Node deployments do: HS256, no `kid`.
    fn node_token(claims: &Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(b"shared"),
        )
        .unwrap()
    }

    #[test]
    fn node_claims_are_read_without_the_broker_only_ones() {
        let token = node_token(&json!({
            "sub": "alice", "sid": "s1", "iat": 1_700_000_000u64, "exp": 1_700_000_060u64,
            "jti": "6f1c7c8e-0b7e-4d55-9d2c-6b0f0c1d2e3f",
        }));
        let claims = stored_claims(&token).unwrap();
        assert_eq!(
            claims,
            StoredClaims {
                iat: Some(1_700_000_000),
                exp: Some(1_700_000_060),
                jti: Some("6f1c7c8e-0b7e-4d55-9d2c-6b0f0c1d2e3f".into()),
            }
        );
    }

    #[test]
    fn odd_claim_types_read_as_absent_and_non_jwts_as_none() {
        let claims = stored_claims(&node_token(&json!({"exp": "1700000060", "jti": 7}))).unwrap();
        assert_eq!((claims.iat, claims.exp, claims.jti), (None, None, None));
        let claims = stored_claims(&node_token(&json!({"iat": 10.9, "exp": -5}))).unwrap();
        assert_eq!((claims.iat, claims.exp), (Some(10), Some(0)));
        for value in ["not a jwt", "", "a.b.c", "x.y", &node_token(&json!([1, 2]))] {
            assert_eq!(stored_claims(value), None, "{value}");
        }
    }

    #[test]
    fn revocation_needs_an_id_jti_and_an_exp() {
        let now = unix_now();
        let claims = |jti: Option<&str>, exp: Option<u64>| StoredClaims {
            iat: Some(now),
            exp,
            jti: jti.map(str::to_string),
        };
        let (key, ttl) = revocation(&claims(Some("j-1"), Some(now + 60)), 5).unwrap();
        assert_eq!(key.as_str(), "rtc:revoked:j-1");
        assert!((64..=65).contains(&ttl.as_secs()), "{ttl:?}");
        // Expired: the marker still outlives it by the leeway.
        let (_, ttl) = revocation(&claims(Some("j-1"), Some(now - 600)), 5).unwrap();
        assert_eq!(ttl.as_secs(), 5);
        let (_, ttl) = revocation(&claims(Some("j-1"), Some(now - 600)), 0).unwrap();
        assert_eq!(ttl.as_secs(), 1);
        assert_eq!(revocation(&claims(None, Some(now + 60)), 5), None);
        assert_eq!(revocation(&claims(Some("a b"), Some(now + 60)), 5), None);
        assert_eq!(revocation(&claims(Some("j-1"), None), 5), None);
    }
}
