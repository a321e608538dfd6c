//! The real `rtc-broker` binary: start-up, check-config, bad configuration,
//! graceful shutdown.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::process::{command, start};

/// A token secret long enough for production (at least 32 bytes).
const PRODUCTION_SECRET: &str = "prod-secret-for-tests-0123456789abcdef";

#[test]
fn starts_with_no_configuration_on_memory_storage() {
    let dir = tempfile::tempdir().unwrap();
    // Port 0 instead of 8080 so parallel test runs cannot collide; the
    // default port itself is checked by check-config below.
    let broker = start(&[("PORT", "0")], dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body: serde_json::Value = rt.block_on(async {
        reqwest::get(format!("http://127.0.0.1:{}/api/health", broker.port))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(body["storage"], "memory");
    let log = broker.log();
    assert!(log.contains("using in-memory storage"), "{log}");
    assert!(
        log.contains("development secret"),
        "dev secret warning: {log}"
    );
}

#[test]
fn check_config_prints_everything_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(
        &[
            ("TOKEN_SECRET", "super-secret-value"),
            ("API_KEYS", "api-key-value"),
            ("REDIS_PASSWORD", "redis-pass-value"),
        ],
        dir.path(),
    )
    .arg("check-config")
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for section in [
        "[server]",
        "[limits]",
        "[storage]",
        "[redis]",
        "[tokens]",
        "[sessions]",
        "[auth]",
        "[log]",
    ] {
        assert!(text.contains(section), "{section} missing:\n{text}");
    }
    assert!(
        text.contains("port = 8080") && text.contains("host = \"127.0.0.1\""),
        "{text}"
    );
    for secret in ["super-secret-value", "api-key-value", "redis-pass-value"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    assert!(text.contains("<redacted>"));
}

#[test]
fn a_bad_value_stops_start_up_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (env, key) in [
        (vec![("REDIS_MODE", "foo")], "redis.mode"),
        (vec![("PORT", "abc")], "PORT"),
        (vec![("BROKER__SERVER__PORT", "99999")], "server.port"),
        (vec![("REDIS_MODE", "sentinel")], "redis.sentinels"),
        (
            vec![
                ("RUN_ENV", "production"),
                ("TOKEN_SECRET", PRODUCTION_SECRET),
            ],
            "auth.api_keys",
        ),
        (
            vec![("BROKER__TOKENS__PRIVATE_KEY_PATH", "/nonexistent/key.pem")],
            "tokens.private_key_path",
        ),
    ] {
        let out = command(&env, dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{env:?}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{env:?}: {stderr}");
        assert!(stderr.contains(key), "{env:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn production_refuses_a_token_secret_under_32_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for (env, key) in [
        (
            vec![
                ("RUN_ENV", "production"),
                ("TOKEN_SECRET", "abc"),
                ("API_KEYS", "k"),
            ],
            "tokens.secret",
        ),
        (
            vec![
                ("RUN_ENV", "production"),
                ("TOKEN_SECRET", PRODUCTION_SECRET),
                ("BROKER__TOKENS__PREVIOUS_SECRETS", "old-abc"),
                ("API_KEYS", "k"),
            ],
            "tokens.previous_secrets",
        ),
    ] {
        let out = command(&env, dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{env:?}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{env:?}: {stderr}");
        assert!(stderr.contains(key), "{env:?}: {stderr}");
        assert!(stderr.contains("32 bytes"), "{env:?}: {stderr}");
        assert!(
            !stderr.contains("abc") && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

#[test]
fn development_starts_with_a_short_token_secret_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(&[("PORT", "0"), ("TOKEN_SECRET", "abc")], dir.path());
    let log = broker.log();
    assert!(
        log.contains("WARN") && log.contains("shorter than 32 bytes"),
        "weak secret warning: {log}"
    );
    assert!(!log.contains("development secret"), "{log}");
}

#[test]
fn config_file_for_run_env_is_layered_under_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/production.toml"),
        "[sessions]\ndefault_ttl_seconds = 77\n[tokens]\nissuer = \"from-file\"\n",
    )
    .unwrap();
    let out = command(
        &[
            ("RUN_ENV", "production"),
            ("TOKEN_SECRET", PRODUCTION_SECRET),
            ("API_KEYS", "k"),
            ("BROKER__TOKENS__ISSUER", "from-env"),
        ],
        dir.path(),
    )
    .arg("check-config")
    .output()
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("default_ttl_seconds = 77"), "{text}");
    assert!(text.contains("issuer = \"from-env\""), "{text}");
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start(&[("PORT", "0")], dir.path());
    let addr = format!("127.0.0.1:{}", broker.port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body = br#"{"session_id":"drain","identity":"alice"}"#;
    let mut stream = rt.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /api/voice/token HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // Half the body: the request is now in flight.
        stream.write_all(&body[..10]).await.unwrap();
        stream.flush().await.unwrap();
        stream
    });
    std::thread::sleep(Duration::from_millis(200));
    kill(Pid::from_raw(broker.child.id() as i32), Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        broker.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    let response = rt.block_on(async {
        stream.write_all(&body[10..]).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("response to the in-flight request")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    });
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("rtc_token"), "{response}");
    drop(stream);
    let status = broker
        .wait_exit(Duration::from_secs(15))
        .expect("broker exits after draining");
    assert_eq!(status.code(), Some(0), "{}", broker.log());
    assert!(broker.log().contains("shutdown complete"));
}

#[test]
fn production_logs_are_json_with_request_fields() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(
        &[
            ("PORT", "0"),
            ("RUN_ENV", "production"),
            ("HOST", "127.0.0.1"),
            ("TOKEN_SECRET", PRODUCTION_SECRET),
            ("API_KEYS", "prod-key"),
        ],
        dir.path(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/health/live", broker.port))
            .header("x-request-id", "json-log-check")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let found = broker
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("json-log-check"))
            .cloned();
        if let Some(line) = found {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no request log:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let entry: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    let span = &entry["span"];
    assert_eq!(span["request_id"], "json-log-check", "{entry}");
    assert_eq!(span["route"], "/health/live", "{entry}");
    assert_eq!(span["method"], "GET", "{entry}");
    assert_eq!(span["status"], 200, "{entry}");
    assert!(!broker.log().contains("prod-key"), "API key logged");
}
