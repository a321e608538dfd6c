//! API keys for management calls (SPEC section 9). Keys are kept only as
//! SHA-256 digests and compared in constant time, and are never logged.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The configured API keys; empty means management calls are open
/// (development only: production refuses to start without a key).
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} configured)", self.digests.len())
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// Keeps only digests of the keys, so the keys themselves never sit in memory dumps or logs.
    pub fn new(keys: &[SecretString]) -> Self {
        Self {
            digests: keys.iter().map(|k| digest(k.expose_secret())).collect(),
        }
    }

    /// False in development without keys: management calls are then open.
    pub fn is_enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Constant-time check against every configured key (digests have equal
    /// length, so neither the key nor its length leaks through timing).
    fn accepts(&self, presented: &str) -> bool {
        let candidate = digest(presented);
        self.digests
            .iter()
            .fold(false, |found, d| found | bool::from(d.ct_eq(&candidate)))
    }

    /// Checks a request's `Authorization: Bearer` or `X-API-Key` header.
    pub fn check(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if !self.is_enabled() {
            return Ok(());
        }
        let presented =
            bearer(req).or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()));
        match presented {
            Some(key) if self.accepts(key.trim()) => Ok(()),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// The credential of `Authorization: Bearer <credential>` (an API key or a
/// token), trimmed; `None` when absent or empty.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Extractor guarding a management endpoint: list it first among a
/// handler's arguments so an unauthenticated call is refused before its
/// body is looked at.
#[derive(Debug)]
pub struct Management;

impl FromRequest for Management {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match req.app_data::<ApiKeys>() {
            Some(keys) => keys.check(req).map(|()| Management),
            None => Ok(Management),
        };
        ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_keys() {
        let keys = ApiKeys::new(&["alpha".into(), "beta".into()]);
        assert!(keys.accepts("alpha") && keys.accepts("beta"));
        assert!(!keys.accepts("alph") && !keys.accepts("") && !keys.accepts("alphaa"));
        assert!(!ApiKeys::new(&[]).is_enabled());
    }
}
