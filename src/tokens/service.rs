use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{Claims, Grants, SigningKeys, TokenError};
use crate::clock::unix_now;
use crate::config::TokenSettings;
use crate::domain::{Id, Ttl};
use crate::store::{keys, Store};

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

/// The live token stored for a session.
#[derive(Debug, Clone, Serialize)]
pub struct StoredToken {
    pub rtc_token: String,
    pub session_id: Id,
    pub expires_at: u64,
}

/// Issues, stores, fetches, revokes and verifies RTC tokens. Cheap to clone.
#[derive(Clone)]
pub struct TokenService {
    keys: Arc<SigningKeys>,
    store: Arc<dyn Store>,
    issuer: String,
    audience: String,
    leeway: u64,
}

impl TokenService {
    /// Issuer, audience and leeway come from `settings`; the store is shared with sessions.
    pub fn new(keys: Arc<SigningKeys>, store: Arc<dyn Store>, settings: &TokenSettings) -> Self {
        Self {
            keys,
            store,
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

    /// The session's live token.
    pub async fn fetch(&self, session_id: &Id) -> Result<StoredToken, TokenError> {
        let token = self
            .store
            .get(&keys::token(session_id))
            .await?
            .ok_or(TokenError::NoToken)?;
        let claims = stored_claims(&token).ok_or(TokenError::NoToken)?;
        if claims.exp <= unix_now() {
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
            let remaining = claims.exp.saturating_sub(unix_now()) + self.leeway;
            self.store
                .set(
                    &keys::revoked_token(&claims.jti),
                    "1",
                    Duration::from_secs(remaining.max(1)),
                )
                .await?;
        }
        // Only remove the token we revoked: a newer one issued meanwhile stays.
        self.store
            .compare_and_swap(&key, &token, None, Duration::from_secs(1))
            .await?;
        Ok(())
    }

    /// Verifies a presented token: signature, claims, and revocation.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.keys.verify(token)?;
        let jti = Id::parse(&claims.jti).map_err(|_| TokenError::Invalid("bad jti".into()))?;
        if self
            .store
            .get(&keys::revoked_token(jti.as_str()))
            .await?
            .is_some()
        {
            return Err(TokenError::Invalid("token revoked".into()));
        }
        Ok(claims)
    }
}

/// Reads the claims of a token this broker stored itself. No signature
/// check: the value came from our own store, and a rotated key must not
/// make a live token unreadable.
pub fn stored_claims(token: &str) -> Option<Claims> {
    jsonwebtoken::dangerous::insecure_decode::<Claims>(token)
        .ok()
        .map(|d| d.claims)
}
