//! Signing and verification keys, looked up by `kid`.
//!
//! HS256 with a shared secret by default; EdDSA (Ed25519) when a private key
//! is configured, with its public keys published as a JWKS. Verification
//! pins the configured algorithm and only accepts `kid`s from the configured
//! key set, which is how a rotation works: old keys stay in the set until
//! their tokens have expired.

use std::collections::HashMap;
use std::fmt::Write as _;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::TokenError;
use crate::config::{TokenSettings, DEVELOPMENT_SECRET};

/// A key configuration that cannot be used; stops start-up (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {key}: {reason}")]
pub struct KeyError {
    pub key: &'static str,
    pub reason: String,
}

/// The broker's token keys: one to sign with, all that may verify.
pub struct SigningKeys {
    algorithm: Algorithm,
    kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    validation: Validation,
    jwks: Option<Value>,
    development_secret: bool,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("verifying_kids", &self.decoding.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn short_hash(label: &str, bytes: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(label.as_bytes())
        .chain_update(bytes)
        .finalize();
    digest.iter().take(8).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl SigningKeys {
    /// Builds the key set from configuration, reading key files if any.
    pub fn from_settings(settings: &TokenSettings) -> Result<Self, KeyError> {
        let (algorithm, kid, encoding, decoding, jwks, development_secret) =
            if settings.private_key_path.is_empty() {
                let (secret, development) = match settings.secret.expose_secret() {
                    "" => (DEVELOPMENT_SECRET, true),
                    secret => (secret, false),
                };
                let kid = format!("hs256-{}", short_hash("hs256", secret.as_bytes()));
                let mut decoding = HashMap::new();
                decoding.insert(kid.clone(), DecodingKey::from_secret(secret.as_bytes()));
                for old in &settings.previous_secrets {
                    let old = old.expose_secret();
                    decoding.insert(
                        format!("hs256-{}", short_hash("hs256", old.as_bytes())),
                        DecodingKey::from_secret(old.as_bytes()),
                    );
                }
                let encoding = EncodingKey::from_secret(secret.as_bytes());
                (Algorithm::HS256, kid, encoding, decoding, None, development)
            } else {
                let (kid, encoding, decoding, jwks) = ed25519_keys(settings)?;
                (Algorithm::EdDSA, kid, encoding, decoding, Some(jwks), false)
            };

        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        validation.set_issuer(&[settings.issuer.as_str()]);
        validation.set_audience(&[settings.audience.as_str()]);
        validation.leeway = settings.leeway_seconds;
        validation.validate_nbf = true;
        Ok(Self {
            algorithm,
            kid,
            encoding,
            decoding,
            validation,
            jwks,
            development_secret,
        })
    }

    /// True when signing with the public development secret (warned about at start-up).
    pub fn uses_development_secret(&self) -> bool {
        self.development_secret
    }

    /// The JWKS document for asymmetric keys; `None` with HS256 (a shared
    /// secret must never be published).
    pub fn jwks(&self) -> Option<&Value> {
        self.jwks.as_ref()
    }

    /// Signs claims with the active key.
    pub fn sign<C: serde::Serialize>(&self, claims: &C) -> Result<String, TokenError> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Checks signature, algorithm, `kid`, `exp`/`nbf` (with leeway), `iss`
    /// and `aud`, and returns the claims as `C` (every field `C` requires
    /// must be present, so one kind of token never passes for another).
    pub fn verify<C: serde::de::DeserializeOwned>(&self, token: &str) -> Result<C, TokenError> {
        let invalid = |reason: &str| TokenError::Invalid(reason.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
        if header.alg != self.algorithm {
            return Err(invalid("token algorithm not accepted"));
        }
        let kid = header.kid.ok_or_else(|| invalid("token has no kid"))?;
        let key = self
            .decoding
            .get(&kid)
            .ok_or_else(|| invalid("unknown signing key (kid)"))?;
        jsonwebtoken::decode::<C>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                let reason = match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::ImmatureSignature => "token not yet valid",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::InvalidAudience => "wrong audience",
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::MissingRequiredClaim(_) => "missing required claim",
                    ErrorKind::InvalidAlgorithm => "token algorithm not accepted",
                    _ => "malformed token",
                };
                invalid(reason)
            })
    }
}

type Ed25519Parts = (String, EncodingKey, HashMap<String, DecodingKey>, Value);

fn ed25519_keys(settings: &TokenSettings) -> Result<Ed25519Parts, KeyError> {
    let read = |key: &'static str, path: &str| {
        std::fs::read_to_string(path).map_err(|e| KeyError {
            key,
            reason: format!("cannot read {path}: {e}"),
        })
    };
    let pem = read("tokens.private_key_path", &settings.private_key_path)?;
    let signing = SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError {
        key: "tokens.private_key_path",
        reason: format!("not an Ed25519 PKCS#8 private key: {e}"),
    })?;
    let der = signing.to_pkcs8_der().map_err(|e| KeyError {
        key: "tokens.private_key_path",
        reason: e.to_string(),
    })?;
    let encoding = EncodingKey::from_ed_der(der.as_bytes());

    let mut verifying = vec![signing.verifying_key()];
    for path in &settings.public_key_paths {
        let pem = read("tokens.public_key_paths", path)?;
        let key = VerifyingKey::from_public_key_pem(&pem).map_err(|e| KeyError {
            key: "tokens.public_key_paths",
            reason: format!("{path} is not an Ed25519 public key: {e}"),
        })?;
        verifying.push(key);
    }

    let mut decoding = HashMap::new();
    let mut jwks = Vec::new();
    for key in &verifying {
        let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
        let kid = format!("ed25519-{}", short_hash("ed25519", key.as_bytes()));
        let decoder = DecodingKey::from_ed_components(&x).map_err(|e| KeyError {
            key: "tokens.public_key_paths",
            reason: e.to_string(),
        })?;
        decoding.insert(kid.clone(), decoder);
        jwks.push(json!({
            "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig",
        }));
    }
    let kid = format!(
        "ed25519-{}",
        short_hash("ed25519", signing.verifying_key().as_bytes())
    );
    Ok((kid, encoding, decoding, json!({ "keys": jwks })))
}
