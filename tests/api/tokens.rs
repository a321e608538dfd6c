use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rtc_broker::clock::unix_now;
use rtc_broker::config::DEVELOPMENT_SECRET;
use serde_json::{json, Value};

use crate::helpers::{eventually, jwt_part, spawn_app, spawn_app_with, Backend, TestApp};

async fn issued_token_carries_every_claim(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = app
        .post_json(
            "/api/voice/token",
            &json!({"session_id": "s1", "identity": "alice", "room": "r1", "ttl_seconds": 120}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session_id"], "s1");
    assert_eq!(body["identity"], "alice");
    assert_eq!(body["room"], "r1");
    assert_eq!(body["opts"]["expires_at"], body["expires_at"]);

    let token = body["rtc_token"].as_str().unwrap();
    let header = jwt_part(token, 0);
    assert_eq!(header["alg"], "HS256");
    assert!(header["kid"].as_str().is_some_and(|k| !k.is_empty()));
    let claims = jwt_part(token, 1);
    assert_eq!(claims["iss"], "rtc-broker");
    assert_eq!(claims["aud"], "rtc");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["sid"], "s1");
    assert_eq!(claims["room"], "r1");
    assert_eq!(
        claims["grants"],
        json!({"room_join": true, "can_publish": true, "can_subscribe": true, "can_publish_data": true})
    );
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["nbf"].as_u64(), Some(iat));
    assert_eq!(claims["exp"].as_u64(), Some(iat + 120));
    assert_eq!(body["expires_at"].as_u64(), Some(iat + 120));
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
}

async fn defaults_and_partial_grants(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = app
        .post_json(
            "/api/voice/token",
            &json!({"session_id": "s-defaults", "grants": {"can_publish": false}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["identity"], "anonymous");
    assert_eq!(body["room"], "s-defaults");
    let claims = jwt_part(body["rtc_token"].as_str().unwrap(), 1);
    assert_eq!(claims["grants"]["can_publish"], false);
    assert_eq!(claims["grants"]["room_join"], true);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60,
        "default ttl is 60 s"
    );
}

async fn fetch_returns_the_live_token_and_a_new_one_replaces_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = app.get("/api/voice/token/none-here").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (412, Some("no_rtc_token"))
    );

    let first = app.issue("s2", 60).await;
    let (status, fetched) = app.get("/api/voice/token/s2").await;
    assert_eq!(status, 200);
    assert_eq!(fetched["rtc_token"], first["rtc_token"]);
    assert_eq!(fetched["session_id"], "s2");
    assert_eq!(fetched["expires_at"], first["expires_at"]);

    let second = app.issue("s2", 60).await;
    assert_ne!(first["rtc_token"], second["rtc_token"]);
    let (_, fetched) = app.get("/api/voice/token/s2").await;
    assert_eq!(fetched["rtc_token"], second["rtc_token"]);
}

async fn token_expires_after_its_ttl_and_leaves_storage(backend: Backend) {
    let app = spawn_app(backend).await;
    let baseline = app.stored_entries().await;
    let issued = app.issue("short", 2).await;
    live_until_exp(&issued, 412, || async {
        app.get("/api/voice/token/short").await.0
    })
    .await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.get("/api/voice/token/short").await.0 == 412
        })
        .await,
        "token still served after its 2 s TTL"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.stored_entries().await <= baseline
        })
        .await,
        "expired token still stored"
    );
}

/// Runs `probe` once against a just-issued token: it must answer 200 if it
/// started before the token's `exp` and `expired` if it ended on or after
/// it. `exp` is whole unix seconds (iat + ttl, iat rounded down), so a
/// token lives between ttl - 1 and ttl seconds, and a slow machine may see
/// either answer; anything else, or the wrong one for the clock, fails.
async fn live_until_exp<F, Fut>(issued: &Value, expired: u16, probe: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let exp = issued["expires_at"].as_u64().unwrap();
    let before = unix_now();
    let status = probe().await;
    let after = unix_now();
    match status {
        200 => assert!(before < exp, "live at {before}, on or after its exp {exp}"),
        s if s == expired => assert!(after >= exp, "refused at {after}, before its exp {exp}"),
        other => panic!("answered {other}"),
    }
}

async fn verify(app: &TestApp, token: &str) -> (u16, Value) {
    app.post_json("/api/tokens/verify", &json!({"token": token}))
        .await
}

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Signs arbitrary claims with the development secret and the given kid.
fn forge(claims: &Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(DEVELOPMENT_SECRET.as_bytes()),
    )
    .unwrap()
}

async fn verify_accepts_good_tokens_and_rejects_bad_ones(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.issue("s3", 60).await["rtc_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = verify(&app, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["valid"], true);
    assert_eq!(body["claims"]["sid"], "s3");

    let header = jwt_part(&token, 0);
    let claims = jwt_part(&token, 1);
    let kid = header["kid"].as_str().unwrap();
    // The forging helper must itself produce accepted tokens, or the
    // rejections below would prove nothing.
    assert_eq!(verify(&app, &forge(&claims, kid)).await.0, 200);

    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    let now = claims["iat"].as_u64().unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&with("sub", json!("mallory"))),
        parts[2]
    );
    let none_alg = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
        parts[1]
    );
    let cases = [
        ("tampered payload", tampered),
        ("alg none", none_alg),
        ("wrong audience", forge(&with("aud", json!("other")), kid)),
        ("wrong issuer", forge(&with("iss", json!("evil")), kid)),
        ("expired", forge(&with("exp", json!(now - 120)), kid)),
        ("not yet valid", forge(&with("nbf", json!(now + 600)), kid)),
        ("unknown kid", forge(&claims, "other-kid")),
        (
            "exp as string",
            forge(&with("exp", json!((now + 60).to_string())), kid),
        ),
        ("no aud", {
            let mut c = claims.clone();
            c.as_object_mut().unwrap().remove("aud");
            forge(&c, kid)
        }),
        // What the Node deployments sign (no iss, aud, nbf, grants), even
        // with our kid: fetch serves such tokens, verify never accepts them.
        (
            "node claim set",
            forge(
                &json!({
                    "sub": claims["sub"], "sid": claims["sid"], "room": claims["room"],
                    "iat": now, "exp": now + 60, "jti": claims["jti"],
                }),
                kid,
            ),
        ),
        ("garbage", "not.a.jwt".to_string()),
        ("wrong secret", {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some(kid.to_string());
            jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(b"other")).unwrap()
        }),
    ];
    for (name, bad) in cases {
        let (status, body) = verify(&app, &bad).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["error"], "invalid_token", "{name}");
    }
}

async fn delete_removes_and_revokes(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.issue("s4", 60).await["rtc_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(verify(&app, &token).await.0, 200);
    assert_eq!(app.delete("/api/voice/token/s4").await.0, 204);
    assert_eq!(app.get("/api/voice/token/s4").await.0, 412);
    let (status, body) = verify(&app, &token).await;
    assert_eq!(status, 401, "revoked token still verifies: {body}");
    assert_eq!(app.delete("/api/voice/token/s4").await.0, 204, "idempotent");
    assert_eq!(app.delete("/api/voice/token/never").await.0, 204);
    // A new token for the same session is not affected by the revocation.
    let fresh = app.issue("s4", 60).await["rtc_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(verify(&app, &fresh).await.0, 200);
}

async fn expired_token_fails_verification(backend: Backend) {
    let app = spawn_app_with(backend, &[("BROKER__TOKENS__LEEWAY_SECONDS", "0")]).await;
    let issued = app.issue("s5", 2).await;
    let token = issued["rtc_token"].as_str().unwrap().to_string();
    live_until_exp(&issued, 401, || async { verify(&app, &token).await.0 }).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            verify(&app, &token).await.0 == 401
        })
        .await,
        "expired token still verifies"
    );
}

async fn a_thousand_concurrent_issues_are_all_retrievable(backend: Backend) {
    let app = std::sync::Arc::new(spawn_app(backend).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let app = app.clone();
        tasks.spawn(async move {
            let body = app.issue(&format!("c{i}"), 600).await;
            (i, body["rtc_token"].as_str().unwrap().to_string())
        });
    }
    let mut issued = Vec::new();
    while let Some(result) = tasks.join_next().await {
        issued.push(result.unwrap());
    }
    assert_eq!(issued.len(), 1000);
    for (i, token) in issued {
        let (status, body) = app.get(&format!("/api/voice/token/c{i}")).await;
        assert_eq!(status, 200);
        assert_eq!(body["rtc_token"], token.as_str());
    }
}

#[tokio::test]
async fn eddsa_tokens_verify_against_the_published_jwks() {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let dir = tempfile::tempdir().unwrap();
    let old = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
    let current = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let pem = current
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    let private = dir.path().join("current.pem");
    std::fs::write(&private, pem.as_bytes()).unwrap();
    let old_public = dir.path().join("old.pub.pem");
    let old_pem = old
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    std::fs::write(&old_public, old_pem).unwrap();

    let app = spawn_app_with(
        Backend::Memory,
        &[
            (
                "BROKER__TOKENS__PRIVATE_KEY_PATH",
                private.to_str().unwrap(),
            ),
            (
                "BROKER__TOKENS__PUBLIC_KEY_PATHS",
                old_public.to_str().unwrap(),
            ),
        ],
    )
    .await;
    let token = app.issue("ed", 60).await["rtc_token"]
        .as_str()
        .unwrap()
        .to_string();
    let header = jwt_part(&token, 0);
    assert_eq!(header["alg"], "EdDSA");

    let (status, jwks) = app.get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "current and rotated-out key: {jwks}");
    let jwk = keys
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("signing kid published");
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );

    // An independent check: verify with only the published public key.
    let key = jsonwebtoken::DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["rtc"]);
    let data = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap();
    assert_eq!(data.claims["sid"], "ed");
    assert_eq!(verify(&app, &token).await.0, 200);

    // A token signed by the rotated-out key still verifies during the rotation.
    let mut h = Header::new(Algorithm::EdDSA);
    let old_kid = keys.iter().find(|k| k["kid"] != header["kid"]).unwrap()["kid"].clone();
    h.kid = old_kid.as_str().map(str::to_string);
    let old_der = old.to_pkcs8_der().unwrap();
    let old_token = jsonwebtoken::encode(
        &h,
        &jwt_part(&token, 1),
        &EncodingKey::from_ed_der(old_der.as_bytes()),
    )
    .unwrap();
    assert_eq!(verify(&app, &old_token).await.0, 200);

    // An HS256 token (algorithm confusion) is refused.
    let hs = forge(&jwt_part(&token, 1), header["kid"].as_str().unwrap());
    assert_eq!(verify(&app, &hs).await.0, 401);
}

#[tokio::test]
async fn no_jwks_with_a_shared_secret() {
    let app = spawn_app(Backend::Memory).await;
    let (status, body) = app.get("/.well-known/jwks.json").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

crate::on_every_backend!(
    issued_token_carries_every_claim,
    defaults_and_partial_grants,
    fetch_returns_the_live_token_and_a_new_one_replaces_it,
    token_expires_after_its_ttl_and_leaves_storage,
    verify_accepts_good_tokens_and_rejects_bad_ones,
    delete_removes_and_revokes,
    expired_token_fails_verification,
    a_thousand_concurrent_issues_are_all_retrievable,
);
