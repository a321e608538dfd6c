//! Signing and verification keys, looked up by `kid`.
//!
//! HS256 with a shared secret by default; EdDSA (Ed25519) or ES256 (P-256)
//! when a private key is configured, with its public keys published as a
//! JWKS. Verification pins the configured algorithm and only accepts `kid`s
//! from the configured key set, which is how a rotation works: the new key
//! signs, old keys stay in the set (verifying, and listed in the JWKS) until
//! `tokens.previous_keys_valid_until` or their removal. A token whose header
//! names a key source (`jku`, `x5u`, `jwk`, `x5c`) is refused outright: the
//! broker never issues one, and keys never come from the token itself.

use std::collections::HashMap;
use std::fmt::Write as _;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::keyfile::{self, PublicKey};
use super::TokenError;
use crate::clock::unix_now;
use crate::config::{TokenSettings, DEVELOPMENT_SECRET};

/// A key configuration that cannot be used; stops start-up (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {key}: {reason}")]
pub struct KeyError {
    pub key: &'static str,
    pub reason: String,
}

/// A key that verifies, and until when (unix seconds; `None` = always).
struct VerifyKey {
    decoding: DecodingKey,
    /// Its JWKS entry (asymmetric keys only).
    jwk: Option<Value>,
    valid_until: Option<u64>,
}

impl VerifyKey {
    fn is_valid(&self, now: u64) -> bool {
        self.valid_until.is_none_or(|until| now <= until)
    }
}

/// The broker's token keys: one to sign with, all that may verify.
pub struct SigningKeys {
    algorithm: Algorithm,
    kid: String,
    encoding: EncodingKey,
    verifying: HashMap<String, VerifyKey>,
    validation: Validation,
    development_secret: bool,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("verifying_kids", &self.verifying.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

pub(super) fn short_hash(label: &str, bytes: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(label.as_bytes())
        .chain_update(bytes)
        .finalize();
    digest.iter().take(8).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// What a key configuration yields: how to sign, and every verifying key
/// (the signing one first, which never lapses).
struct KeySet {
    algorithm: Algorithm,
    kid: String,
    encoding: EncodingKey,
    verifying: Vec<(String, VerifyKey)>,
    development_secret: bool,
}

fn hs256_keys(settings: &TokenSettings, previous_until: Option<u64>) -> KeySet {
    let (secret, development) = match settings.secret.expose_secret() {
        "" => (DEVELOPMENT_SECRET, true),
        secret => (secret, false),
    };
    let entry = |secret: &str, valid_until| {
        let kid = format!("hs256-{}", short_hash("hs256", secret.as_bytes()));
        let key = VerifyKey {
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            jwk: None,
            valid_until,
        };
        (kid, key)
    };
    let mut verifying = vec![entry(secret, None)];
    for old in &settings.previous_secrets {
        verifying.push(entry(old.expose_secret(), previous_until));
    }
    KeySet {
        algorithm: Algorithm::HS256,
        kid: verifying[0].0.clone(),
        encoding: EncodingKey::from_secret(secret.as_bytes()),
        verifying,
        development_secret: development,
    }
}

fn asymmetric_keys(
    settings: &TokenSettings,
    previous_until: Option<u64>,
) -> Result<KeySet, KeyError> {
    let private = keyfile::read_private(&settings.private_key_path)?;
    let entry = |public: PublicKey, valid_until| {
        let key = VerifyKey {
            decoding: public.decoding,
            jwk: Some(public.jwk),
            valid_until,
        };
        (public.kid, key)
    };
    let kid = private.public.kid.clone();
    let mut verifying = vec![entry(private.public, None)];
    for path in &settings.public_key_paths {
        let public = keyfile::read_public(path, private.algorithm)?;
        verifying.push(entry(public, previous_until));
    }
    Ok(KeySet {
        algorithm: private.algorithm,
        kid,
        encoding: private.encoding,
        verifying,
        development_secret: false,
    })
}

impl SigningKeys {
    /// Builds the key set from configuration, reading key files if any.
    pub fn from_settings(settings: &TokenSettings) -> Result<Self, KeyError> {
        let previous_until = match settings.previous_keys_valid_until {
            0 => None,
            until => Some(until),
        };
        let set = if settings.private_key_path.is_empty() {
            hs256_keys(settings, previous_until)
        } else {
            asymmetric_keys(settings, previous_until)?
        };
        let mut validation = Validation::new(set.algorithm);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        validation.set_issuer(&[settings.issuer.as_str()]);
        validation.set_audience(&[settings.audience.as_str()]);
        validation.leeway = settings.leeway_seconds;
        validation.validate_nbf = true;
        Ok(Self {
            algorithm: set.algorithm,
            kid: set.kid,
            encoding: set.encoding,
            // A previous key equal to the current one keeps the current
            // one's (unlimited) validity: the first entry wins.
            verifying: set.verifying.into_iter().rev().collect(),
            validation,
            development_secret: set.development_secret,
        })
    }

    /// True when signing with the public development secret (warned about at start-up).
    pub fn uses_development_secret(&self) -> bool {
        self.development_secret
    }

    /// The algorithm tokens are signed with and verification pins.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The JWKS document: the public keys that verify now. `None` with
    /// HS256 (a shared secret must never be published).
    pub fn jwks(&self) -> Option<Value> {
        if self.algorithm == Algorithm::HS256 {
            return None;
        }
        let now = unix_now();
        let mut keys: Vec<(&String, &Value)> = self
            .verifying
            .iter()
            .filter(|(_, key)| key.is_valid(now))
            .filter_map(|(kid, key)| key.jwk.as_ref().map(|jwk| (kid, jwk)))
            .collect();
        // The signing key first, then the others in a stable order.
        keys.sort_by_key(|(kid, _)| (**kid != self.kid, kid.as_str()));
        Some(json!({ "keys": keys.into_iter().map(|(_, jwk)| jwk).collect::<Vec<_>>() }))
    }

    /// Signs claims with the active key.
    pub fn sign<C: serde::Serialize>(&self, claims: &C) -> Result<String, TokenError> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Checks the header (algorithm, `kid` among the keys valid now, no key
    /// source), signature, `exp`/`nbf` (with leeway), `iss` and `aud`, and
    /// returns the claims as `C` (every field `C` requires must be present,
    /// so one kind of token never passes for another).
    pub fn verify<C: serde::de::DeserializeOwned>(&self, token: &str) -> Result<C, TokenError> {
        let invalid = |reason: &str| TokenError::Invalid(reason.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
        if header.alg != self.algorithm {
            return Err(invalid("token algorithm not accepted"));
        }
        let names_key_source = header.jku.is_some()
            || header.x5u.is_some()
            || header.jwk.is_some()
            || header.x5c.is_some();
        if names_key_source {
            return Err(invalid("token header names a key source (jku/x5u/jwk/x5c)"));
        }
        let kid = header.kid.ok_or_else(|| invalid("token has no kid"))?;
        let key = self
            .verifying
            .get(&kid)
            .filter(|key| key.is_valid(unix_now()))
            .ok_or_else(|| invalid("unknown signing key (kid)"))?;
        jsonwebtoken::decode::<C>(token, &key.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| invalid(reason(&e)))
    }
}

/// What a client is told about a failed verification.
fn reason(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::MissingRequiredClaim(_) => "missing required claim",
        ErrorKind::InvalidAlgorithm => "token algorithm not accepted",
        _ => "malformed token",
    }
}
