//! Asymmetric key files (PEM): an Ed25519 or P-256 private key (PKCS#8)
//! that signs, and public keys (SPKI) of the same kind that verify during
//! a rotation. Each key gets a `kid` derived from its public key and a
//! JWKS entry, so every instance with the same files agrees on both.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{json, Value};

use super::signing::short_hash;
use super::KeyError;

/// A verifying key with its id and JWKS entry.
pub struct PublicKey {
    pub kid: String,
    pub decoding: DecodingKey,
    pub jwk: Value,
}

/// The signing key, its algorithm, and its own public half.
pub struct PrivateKey {
    pub algorithm: Algorithm,
    pub encoding: EncodingKey,
    pub public: PublicKey,
}

const PRIVATE: &str = "tokens.private_key_path";
const PUBLIC: &str = "tokens.public_key_paths";

fn read(key: &'static str, path: &str) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|e| KeyError {
        key,
        reason: format!("cannot read {path}: {e}"),
    })
}

/// Reads the private key: Ed25519 (EdDSA) or P-256 (ES256).
pub fn read_private(path: &str) -> Result<PrivateKey, KeyError> {
    let pem = read(PRIVATE, path)?;
    if let Ok(signing) = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem) {
        let der = signing.to_pkcs8_der().map_err(|e| invalid(PRIVATE, e))?;
        return Ok(PrivateKey {
            algorithm: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            public: ed25519_public(&signing.verifying_key())?,
        });
    }
    if let Ok(secret) = p256::SecretKey::from_pkcs8_pem(&pem) {
        let der = p256::pkcs8::EncodePrivateKey::to_pkcs8_der(&secret)
            .map_err(|e| invalid(PRIVATE, e))?;
        return Ok(PrivateKey {
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            public: p256_public(&secret.public_key())?,
        });
    }
    Err(KeyError {
        key: PRIVATE,
        reason: format!("{path} is not an Ed25519 or P-256 PKCS#8 private key"),
    })
}

/// Reads a public key of the kind `algorithm` signs with.
pub fn read_public(path: &str, algorithm: Algorithm) -> Result<PublicKey, KeyError> {
    let pem = read(PUBLIC, path)?;
    let wrong = |kind: &str, e: &dyn std::fmt::Display| KeyError {
        key: PUBLIC,
        reason: format!("{path} is not an {kind} public key like the private key: {e}"),
    };
    match algorithm {
        Algorithm::EdDSA => ed25519_public(
            &ed25519_dalek::VerifyingKey::from_public_key_pem(&pem)
                .map_err(|e| wrong("Ed25519", &e))?,
        ),
        _ => p256_public(
            &<p256::PublicKey as p256::pkcs8::DecodePublicKey>::from_public_key_pem(&pem)
                .map_err(|e| wrong("P-256", &e))?,
        ),
    }
}

fn invalid(key: &'static str, e: impl std::fmt::Display) -> KeyError {
    KeyError {
        key,
        reason: e.to_string(),
    }
}

fn ed25519_public(key: &ed25519_dalek::VerifyingKey) -> Result<PublicKey, KeyError> {
    let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
    let kid = format!("ed25519-{}", short_hash("ed25519", key.as_bytes()));
    Ok(PublicKey {
        decoding: DecodingKey::from_ed_components(&x).map_err(|e| invalid(PUBLIC, e))?,
        jwk: json!({
            "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig",
        }),
        kid,
    })
}

fn p256_public(key: &p256::PublicKey) -> Result<PublicKey, KeyError> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let point = key.to_encoded_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(invalid(PUBLIC, "P-256 key without coordinates"));
    };
    let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
    let kid = format!("es256-{}", short_hash("es256", point.as_bytes()));
    Ok(PublicKey {
        decoding: DecodingKey::from_ec_components(&x, &y).map_err(|e| invalid(PUBLIC, e))?,
        jwk: json!({
            "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig",
        }),
        kid,
    })
}
