//! Mixed fleets (issue #7, item 6): the Node deployments' token service
//! (`../shared/peers/node-seed`, run for real with `node server.js`) and the
//! broker on one Redis with no key prefix and one `TOKEN_SECRET`, as while
//! a team replaces its Node instances one at a time. Each side must serve
//! the other's tokens byte for byte; the broker's verify stays strict.
//!
//! Needs `node` and the peer's dependencies: `scripts/test.sh` installs
//! Node.js when missing, copies the peer into `target/node-seed`, runs
//! `npm ci` there and sets `NODE_SEED_DIR`. Without them these tests fail
//! with that hint; they never skip.

#[path = "../harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::Method;
use serde_json::{json, Value};

/// The `TOKEN_SECRET` both sides are given.
const SECRET: &str = "mixed-fleet-shared-secret";

const NODE_HINT: &str = "tests/mixed_fleet runs the Node deployments' token service: \
    install Node.js with `apt-get install nodejs npm` (npm only when the `npm` command is \
    missing: NodeSource's nodejs includes it), keep the workspace's `shared/peers/node-seed` \
    beside the repo (`../shared/peers/node-seed`), and run scripts/test.sh, which copies it \
    into target/node-seed, runs `npm ci --no-audit --no-fund` there and sets NODE_SEED_DIR";

/// The running Node peer, shared by every test of this binary. It is never
/// dropped: the harness's spawner kills it when the test process ends.
struct NodePeer {
    base: String,
    _child: Child,
}

static NODE: tokio::sync::OnceCell<NodePeer> = tokio::sync::OnceCell::const_new();

/// The node-seed copy with its dependencies: `NODE_SEED_DIR`, else
/// `target/node-seed`. Panics with the install hint when anything is missing.
fn node_seed_dir() -> PathBuf {
    let ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "`node` not found. {NODE_HINT}");
    let dir = std::env::var_os("NODE_SEED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/node-seed"));
    for needed in ["server.js", "node_modules"] {
        assert!(
            dir.join(needed).exists(),
            "{} is missing. {NODE_HINT}",
            dir.join(needed).display()
        );
    }
    dir
}

/// Starts `node server.js` on a free port against the shared Redis and
/// waits until it answers health with `storage: "redis"` (the peer falls
/// back to memory silently when Redis does not answer).
async fn node_peer() -> &'static NodePeer {
    NODE.get_or_init(|| async {
        let dir = node_seed_dir();
        let redis = harness::blocking(|| harness::shared_single().url()).await;
        let port = harness::free_port();
        let log_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("node-seed-{port}.log"));
        let log = std::fs::File::create(&log_path).expect("node-seed log file");
        let mut cmd = Command::new("node");
        cmd.arg("server.js")
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("REDIS_URL", redis)
            .env("TOKEN_SECRET", SECRET)
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        let mut child = harness::spawn_tied(cmd)
            .unwrap_or_else(|e| panic!("cannot start `node server.js`: {e}. {NODE_HINT}"));
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                panic!("node server.js exited ({status}):\n{}\n{NODE_HINT}", log());
            }
            if let Ok(res) = client.get(format!("{base}/api/health")).send().await {
                let health: Value = res.json().await.unwrap_or_default();
                assert_eq!(
                    health["storage"],
                    "redis",
                    "node-seed is not on Redis: {health}\n{}",
                    log()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node-seed did not answer:\n{}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        NodePeer {
            base,
            _child: child,
        }
    })
    .await
}

/// One broker instance (the real app, in process) on the shared Redis:
/// no key prefix, the same secret, given by the Node deployments' legacy
/// names. No memory fallback, so a Redis problem shows as a 503.
async fn broker() -> String {
    let redis = harness::blocking(|| harness::shared_single().url()).await;
    harness::spawn_broker(&harness::broker_env(&[
        ("REDIS_URL", redis),
        ("TOKEN_SECRET", SECRET.to_string()),
        ("BROKER__STORAGE__FALLBACK", "false".to_string()),
    ]))
    .await
}

/// A broker and the Node peer on one Redis, and a client for both.
struct Fleet {
    broker: String,
    node: String,
    client: reqwest::Client,
}

impl Fleet {
    async fn start() -> Self {
        let node = node_peer().await.base.clone();
        Self {
            broker: broker().await,
            node,
            client: reqwest::Client::new(),
        }
    }

    /// Status and JSON body (Null when empty).
    async fn call(&self, method: Method, url: String, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method, url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let bytes = res.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        (status, body)
    }

    async fn node_issue(&self, body: Value) -> Value {
        let (status, body) = self
            .call(
                Method::POST,
                format!("{}/api/voice/token", self.node),
                Some(body),
            )
            .await;
        assert_eq!(status, 200, "node issue: {body}");
        body
    }

    async fn node_get(&self, session_id: &str) -> (u16, Value) {
        let url = format!("{}/api/voice/token/{session_id}", self.node);
        self.call(Method::GET, url, None).await
    }

    async fn broker_issue(&self, session_id: &str, ttl: u64) -> Value {
        let (status, body) = self
            .call(
                Method::POST,
                format!("{}/api/voice/token", self.broker),
                Some(json!({"session_id": session_id, "ttl_seconds": ttl})),
            )
            .await;
        assert_eq!(status, 200, "broker issue: {body}");
        body
    }

    async fn broker_get(&self, session_id: &str) -> (u16, Value) {
        let url = format!("{}/api/voice/token/{session_id}", self.broker);
        self.call(Method::GET, url, None).await
    }

    async fn broker_delete(&self, session_id: &str) -> u16 {
        let url = format!("{}/api/voice/token/{session_id}", self.broker);
        self.call(Method::DELETE, url, None).await.0
    }

    async fn broker_verify(&self, token: &str) -> (u16, Value) {
        let url = format!("{}/api/tokens/verify", self.broker);
        self.call(Method::POST, url, Some(json!({ "token": token })))
            .await
    }
}

/// A session id no other test (or run on the same Redis) uses.
fn session_id(label: &str) -> String {
    format!(
        "mf-{label}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// `redis-cli` against the shared Redis, off the async runtime.
async fn redis(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    harness::blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        harness::shared_single().node.cli(&args).trim().to_string()
    })
    .await
}

/// A JWT part (header 0, claims 1) as JSON, without verification.
fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("JWT part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON part")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Signs `claims` with the shared secret the way the Node service does
/// (HS256, no `kid`), for values the peer itself would never write.
fn node_style_token(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_token_is_served_by_the_broker_byte_for_byte() {
    let fleet = Fleet::start().await;

    let sid = session_id("node-to-broker");
    let issued = fleet
        .node_issue(
            json!({"session_id": sid, "identity": "alice", "room": "r1", "ttl_seconds": 120}),
        )
        .await;
    let token = issued["rtc_token"].as_str().expect("rtc_token");
    let claims = jwt_part(token, 1);
    // The Node claim set: none of the broker-only claims.
    for absent in ["iss", "aud", "nbf", "grants"] {
        assert!(claims.get(absent).is_none(), "{absent} in {claims}");
    }
    assert_eq!(claims["exp"], issued["expires_at"]);

    let (status, fetched) = fleet.broker_get(&sid).await;
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(fetched["rtc_token"].as_str(), Some(token), "same bytes");
    assert_eq!(fetched["session_id"], sid.as_str());
    assert_eq!(fetched["expires_at"], issued["expires_at"]);
    assert_eq!(
        fetched["expires_at"].as_u64(),
        claims["iat"].as_u64().map(|iat| iat + 120)
    );

    // Without a room the Node token has no `room` claim at all.
    let bare = session_id("node-no-room");
    let issued = fleet.node_issue(json!({ "session_id": bare })).await;
    let token = issued["rtc_token"].as_str().expect("rtc_token");
    assert!(jwt_part(token, 1).get("room").is_none());
    let (status, fetched) = fleet.broker_get(&bare).await;
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(fetched["rtc_token"].as_str(), Some(token));
    assert_eq!(fetched["expires_at"], issued["expires_at"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_token_is_served_by_node_byte_for_byte() {
    let fleet = Fleet::start().await;
    let sid = session_id("broker-to-node");

    let issued = fleet.broker_issue(&sid, 120).await;
    let (status, fetched) = fleet.node_get(&sid).await;
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(fetched["rtc_token"], issued["rtc_token"], "same bytes");
    assert_eq!(fetched["session_id"], sid.as_str());

    // A new token from either side replaces the other's, for both.
    let from_node = fleet.node_issue(json!({ "session_id": sid })).await;
    let (status, fetched) = fleet.broker_get(&sid).await;
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(fetched["rtc_token"], from_node["rtc_token"]);
    let from_broker = fleet.broker_issue(&sid, 60).await;
    let (_, fetched) = fleet.node_get(&sid).await;
    assert_eq!(fetched["rtc_token"], from_broker["rtc_token"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_node_token_through_the_broker_removes_and_revokes_it() {
    let fleet = Fleet::start().await;
    let sid = session_id("node-delete");
    let issued = fleet
        .node_issue(json!({"session_id": sid, "ttl_seconds": 300}))
        .await;
    let token = issued["rtc_token"].as_str().expect("rtc_token");
    let jti = jwt_part(token, 1)["jti"]
        .as_str()
        .expect("Node tokens carry a jti")
        .to_string();
    assert_eq!(fleet.node_get(&sid).await.0, 200);

    assert_eq!(fleet.broker_delete(&sid).await, 204);
    let (status, body) = fleet.node_get(&sid).await;
    assert_eq!((status, &body), (412, &json!({"error": "no_rtc_token"})));
    let (status, body) = fleet.broker_get(&sid).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (412, Some("no_rtc_token"))
    );
    assert_eq!(redis(&["EXISTS", &format!("rtc:token:{sid}")]).await, "0");
    // Revoked until it would have expired, plus the default 5 s leeway.
    let ttl_ms: i64 = redis(&["PTTL", &format!("rtc:revoked:{jti}")])
        .await
        .parse()
        .expect("PTTL");
    assert!(
        (295_000..=305_000).contains(&ttl_ms),
        "revocation TTL {ttl_ms} ms"
    );
    assert_eq!(fleet.broker_delete(&sid).await, 204, "idempotent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_verify_refuses_a_node_token() {
    let fleet = Fleet::start().await;
    let sid = session_id("node-verify");
    let issued = fleet.node_issue(json!({ "session_id": sid })).await;
    let token = issued["rtc_token"].as_str().expect("rtc_token");

    // Genuinely signed with the shared secret: the refusal is about the
    // claims and header, not the key.
    let mut lax = Validation::new(Algorithm::HS256);
    lax.validate_aud = false;
    let signed =
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(SECRET.as_bytes()), &lax);
    assert!(signed.is_ok(), "{signed:?}");

    let (status, body) = fleet.broker_verify(token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    // Even with the broker's kid in its header, the Node claim set (no
    // iss, aud, nbf) is refused.
    let ours = fleet.broker_issue(&session_id("broker-verify"), 60).await;
    let ours = ours["rtc_token"].as_str().expect("rtc_token");
    assert_eq!(fleet.broker_verify(ours).await.0, 200, "same secret");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = jwt_part(ours, 0)["kid"].as_str().map(str::to_string);
    let with_kid = jsonwebtoken::encode(
        &header,
        &jwt_part(token, 1),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign");
    let (status, body) = fleet.broker_verify(&with_kid).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_values_without_a_usable_exp() {
    let fleet = Fleet::start().await;
    let set = |sid: &str, value: &str| {
        let (key, value) = (format!("rtc:token:{sid}"), value.to_string());
        async move { assert_eq!(redis(&["SET", &key, &value, "EX", "60"]).await, "OK") }
    };

    // Not a JWT at all: no token (412), not a server error; DELETE clears it.
    let garbage = session_id("garbage");
    set(&garbage, "not a jwt").await;
    let (status, body) = fleet.broker_get(&garbage).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (412, Some("no_rtc_token")),
        "{body}"
    );
    assert_eq!(fleet.broker_delete(&garbage).await, 204);
    assert_eq!(
        redis(&["EXISTS", &format!("rtc:token:{garbage}")]).await,
        "0"
    );

    // An `exp` in the past: not live, whatever the key's TTL says.
    let expired = session_id("expired");
    let jti = uuid::Uuid::new_v4().to_string();
    set(
        &expired,
        &node_style_token(
            &json!({"sub": "anonymous", "sid": expired, "iat": now() - 70, "exp": now() - 10, "jti": jti}),
        ),
    )
    .await;
    assert_eq!(fleet.broker_get(&expired).await.0, 412);

    // No `exp`: live while the key exists, `expires_at` null (not guessed).
    let no_exp = session_id("no-exp");
    let jti = uuid::Uuid::new_v4().to_string();
    let token =
        node_style_token(&json!({"sub": "anonymous", "sid": no_exp, "iat": now(), "jti": jti}));
    set(&no_exp, &token).await;
    let (status, body) = fleet.broker_get(&no_exp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rtc_token"].as_str(), Some(token.as_str()));
    assert_eq!(body.get("expires_at"), Some(&Value::Null), "{body}");
    // Deleted; no revocation marker, since verify never accepts it anyway.
    assert_eq!(fleet.broker_delete(&no_exp).await, 204);
    assert_eq!(fleet.broker_get(&no_exp).await.0, 412);
    assert_eq!(redis(&["EXISTS", &format!("rtc:revoked:{jti}")]).await, "0");
    let (status, _) = fleet.broker_verify(&token).await;
    assert_eq!(status, 401);
}
