//! Signing keys (SPEC sections 4 and 9): ES256 with its JWKS, rotation
//! with a validity end for previous keys, and headers that name a key
//! source refused even when the signature is good.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rtc_broker::clock::unix_now;
use serde_json::{json, Value};

use crate::helpers::{jwt_part, spawn_app_with, Backend, TestApp};

const SECRET: &str = "keys-test-secret-0123456789abcdef-current";
const OLD_SECRET: &str = "keys-test-secret-0123456789abcdef-previous";

async fn verify(app: &TestApp, token: &str) -> (u16, Value) {
    app.post_json("/api/tokens/verify", &json!({ "token": token }))
        .await
}

async fn token(app: &TestApp, session: &str) -> String {
    app.issue(session, 300).await["rtc_token"]
        .as_str()
        .expect("rtc_token")
        .to_string()
}

/// Signs `claims` under an arbitrary header (any fields) with `key`.
fn forge_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let message = format!("{}.{}", b64(header), b64(claims));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("sign");
    format!("{message}.{signature}")
}

fn p256_files(dir: &std::path::Path, name: &str, scalar: u8) -> (String, String, p256::SecretKey) {
    let key = p256::SecretKey::from_slice(&[scalar; 32]).expect("scalar");
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let pem = key.to_pkcs8_pem(LineEnding::LF).expect("pem");
    std::fs::write(&private, pem.as_bytes()).expect("write");
    let pem = key
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("pem");
    std::fs::write(&public, pem).expect("write");
    let path = |p: std::path::PathBuf| p.display().to_string();
    (path(private), path(public), key)
}

#[tokio::test]
async fn es256_tokens_verify_against_the_jwks_and_previous_keys_lapse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, _, _) = p256_files(dir.path(), "current", 5);
    let (_, old_public, old_key) = p256_files(dir.path(), "old", 9);
    let env = |until: u64| {
        vec![
            ("BROKER__TOKENS__PRIVATE_KEY_PATH", private.clone()),
            ("BROKER__TOKENS__PUBLIC_KEY_PATHS", old_public.clone()),
            (
                "BROKER__TOKENS__PREVIOUS_KEYS_VALID_UNTIL",
                until.to_string(),
            ),
        ]
    };
    let valid = env(unix_now() + 600);
    let valid: Vec<(&str, &str)> = valid.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app_with(Backend::Memory, &valid).await;
    let token = token(&app, "ec").await;
    let header = jwt_part(&token, 0);
    assert_eq!(header["alg"], "ES256");

    let (status, jwks) = app.get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2, "current and previous key: {jwks}");
    assert_eq!(keys[0]["kid"], header["kid"], "the signing key comes first");
    for key in keys {
        assert_eq!(
            (key["kty"].as_str(), key["crv"].as_str()),
            (Some("EC"), Some("P-256"))
        );
        assert!(key.get("d").is_none(), "no private part published: {key}");
    }
    // An independent check with only the published key.
    let jwk = &keys[0];
    let decoding = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap(),
    )
    .expect("jwk");
    let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
    validation.set_audience(&["rtc"]);
    jsonwebtoken::decode::<Value>(&token, &decoding, &validation).expect("verifies");

    // A token of the previous key verifies until its validity ends.
    let old_der = old_key.to_pkcs8_der().expect("der");
    let old_signing = EncodingKey::from_ec_der(old_der.as_bytes());
    let old_header = json!({"alg": "ES256", "typ": "JWT", "kid": keys[1]["kid"]});
    let claims = jwt_part(&token, 1);
    let old_token = forge_raw(&old_header, &claims, &old_signing, Algorithm::ES256);
    assert_eq!(verify(&app, &old_token).await.0, 200);

    let lapsed = env(unix_now() - 1);
    let lapsed: Vec<(&str, &str)> = lapsed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let after = spawn_app_with(Backend::Memory, &lapsed).await;
    let (_, jwks) = after.get("/.well-known/jwks.json").await;
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1), "{jwks}");
    let (status, body) = verify(&after, &old_token).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (401, Some("unknown signing key (kid)"))
    );
    assert_eq!(
        verify(&after, &token).await.0,
        200,
        "the current key still verifies"
    );
}

#[tokio::test]
async fn hs256_rotation_old_tokens_verify_until_the_old_secret_goes() {
    let before = spawn_app_with(Backend::Memory, &[("TOKEN_SECRET", OLD_SECRET)]).await;
    let old_token = token(&before, "rot").await;

    let until = (unix_now() + 600).to_string();
    let rotated = spawn_app_with(
        Backend::Memory,
        &[
            ("TOKEN_SECRET", SECRET),
            ("BROKER__TOKENS__PREVIOUS_SECRETS", OLD_SECRET),
            ("BROKER__TOKENS__PREVIOUS_KEYS_VALID_UNTIL", until.as_str()),
        ],
    )
    .await;
    let new_token = token(&rotated, "rot").await;
    assert_ne!(
        jwt_part(&new_token, 0)["kid"],
        jwt_part(&old_token, 0)["kid"]
    );
    assert_eq!(
        verify(&rotated, &old_token).await.0,
        200,
        "old key still verifies"
    );
    assert_eq!(verify(&rotated, &new_token).await.0, 200);
    assert_eq!(
        rotated.get("/.well-known/jwks.json").await.0,
        404,
        "a secret is never published"
    );

    let removed = spawn_app_with(Backend::Memory, &[("TOKEN_SECRET", SECRET)]).await;
    let (status, body) = verify(&removed, &old_token).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (401, Some("unknown signing key (kid)"))
    );
    assert_eq!(verify(&removed, &new_token).await.0, 200);
}

#[tokio::test]
async fn headers_naming_a_key_source_are_refused_even_when_signed_right() {
    let app = spawn_app_with(Backend::Memory, &[("TOKEN_SECRET", SECRET)]).await;
    let token = token(&app, "src").await;
    let kid = jwt_part(&token, 0)["kid"].clone();
    let claims = jwt_part(&token, 1);
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let sign = |header: Value| forge_raw(&header, &claims, &key, Algorithm::HS256);
    // Control: the forging itself produces accepted tokens.
    let plain = sign(json!({"alg": "HS256", "typ": "JWT", "kid": kid}));
    assert_eq!(verify(&app, &plain).await.0, 200);
    let jwk = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(SECRET), "alg": "HS256"});
    let cases = [
        (
            "jku",
            json!({"alg": "HS256", "kid": kid, "jku": "https://evil.example/jwks"}),
        ),
        (
            "x5u",
            json!({"alg": "HS256", "kid": kid, "x5u": "https://evil.example/cert"}),
        ),
        ("jwk", json!({"alg": "HS256", "kid": kid, "jwk": jwk})),
        ("x5c", json!({"alg": "HS256", "kid": kid, "x5c": ["MIIB"]})),
        ("no kid", json!({"alg": "HS256", "typ": "JWT"})),
        ("alg HS384", json!({"alg": "HS384", "kid": kid})),
    ];
    for (name, header) in cases {
        let (status, body) = verify(&app, &sign(header)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token")),
            "{name}"
        );
    }
}
