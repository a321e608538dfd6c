//! A recording client for the tests: an app with its own storage folders
//! and an API key, and the calls of SPEC section 7.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{self, Backend, TestApp};

pub const API_KEY: &str = "recordings-test-key";

/// A broker with recording folders of its own (siblings share them).
pub struct RecApp {
    pub app: TestApp,
    pub dirs: std::sync::Arc<tempfile::TempDir>,
}

pub async fn rec_app(backend: Backend, extra: &[(&str, &str)]) -> RecApp {
    rec_app_on(backend, None, extra).await
}

/// The app on a topology of the test's own when `redis_env` is given.
pub async fn rec_app_on(
    backend: Backend,
    redis_env: Option<Vec<(String, String)>>,
    extra: &[(&str, &str)],
) -> RecApp {
    let dirs = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
    rec_app_in(dirs, backend, redis_env, extra).await
}

/// An app on existing recording folders (e.g. a restart).
pub async fn rec_app_in(
    dirs: std::sync::Arc<tempfile::TempDir>,
    backend: Backend,
    redis_env: Option<Vec<(String, String)>>,
    extra: &[(&str, &str)],
) -> RecApp {
    let chunks = dirs.path().join("chunks").display().to_string();
    let outputs = dirs.path().join("out").display().to_string();
    let mut env = vec![
        ("TEMP_DIR", chunks.as_str()),
        ("STORAGE_LOCAL_PATH", outputs.as_str()),
        ("API_KEYS", API_KEY),
    ];
    env.extend_from_slice(extra);
    let redis_env = redis_env.unwrap_or_else(|| backend.env());
    RecApp {
        app: helpers::spawn_app_on(backend, redis_env, &env).await,
        dirs,
    }
}

impl RecApp {
    pub async fn sibling(&self) -> RecApp {
        RecApp {
            app: self.app.sibling().await,
            dirs: self.dirs.clone(),
        }
    }

    pub fn chunk_dir(&self, record: &str) -> PathBuf {
        self.dirs.path().join("chunks").join(record)
    }

    pub fn output_dir(&self) -> PathBuf {
        self.dirs.path().join("out")
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.app.client.request(method, self.app.url(path))
    }

    /// Starts a recording with the API key; returns the 201 body.
    pub async fn start(&self) -> Value {
        let res = self
            .request(reqwest::Method::POST, "/api/recordings")
            .header("x-api-key", API_KEY)
            .json(&json!({"session_id": "s-1"}))
            .send()
            .await
            .expect("start");
        let (status, body) = helpers::read(res).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Uploads one chunk with a bearer credential (upload token or key).
    pub async fn chunk_as(&self, record: &str, bearer: &str, bytes: Vec<u8>) -> (u16, Value) {
        let res = self
            .request(
                reqwest::Method::POST,
                &format!("/api/recordings/{record}/chunks"),
            )
            .bearer_auth(bearer)
            .body(bytes)
            .send()
            .await
            .expect("chunk");
        helpers::read(res).await
    }

    /// Uploads one chunk with the API key; asserts 201, returns the index.
    pub async fn chunk(&self, record: &str, bytes: Vec<u8>) -> u64 {
        let (status, body) = self.chunk_as(record, API_KEY, bytes).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["record_id"], record);
        body["index"].as_u64().expect("index")
    }

    pub async fn stop(&self, record: &str) -> (u16, Value) {
        let res = self
            .request(
                reqwest::Method::POST,
                &format!("/api/recordings/{record}/stop"),
            )
            .header("x-api-key", API_KEY)
            .send()
            .await
            .expect("stop");
        helpers::read(res).await
    }

    pub async fn status(&self, record: &str) -> (u16, Value) {
        let res = self
            .request(
                reqwest::Method::GET,
                &format!("/api/recordings/{record}/status"),
            )
            .header("x-api-key", API_KEY)
            .send()
            .await
            .expect("status");
        helpers::read(res).await
    }

    /// Waits until the recording is `ready` or `failed`; returns its status.
    pub async fn finished(&self, record: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (code, body) = self.status(record).await;
            assert_eq!(code, 200, "{body}");
            if body["state"] == "ready" || body["state"] == "failed" {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "recording {record} still {} after {timeout:?}",
                body["state"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GETs a download path with extra headers; status, headers, bytes.
    pub async fn download(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let mut req = self.request(reqwest::Method::GET, path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("download");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body").to_vec();
        (status, headers, bytes)
    }
}

/// Reads a file the test made (blocking is fine in a test).
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The stored chunk files of a recording: index -> bytes.
pub fn stored_chunks(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut found: Vec<(u64, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let index = name.parse::<u64>().ok()?;
                    Some((index, std::fs::read(e.path()).ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}
