//! HTTP/1.1 and WebSocket on the wire, for tests that send what an HTTP
//! client would normalise or refuse (`..` segments, odd methods, partial
//! heads, invalid UTF-8 frames) and read exactly what came back.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The headers of a WebSocket handshake (besides `connection: upgrade`).
pub const WS_HANDSHAKE: [(&str, &str); 3] = [
    ("upgrade", "websocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

/// `host:port` of an app's base URL.
pub fn host(base_url: &str) -> String {
    base_url.trim_start_matches("http://").to_string()
}

/// One parsed answer (informational 100s skipped).
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Status line and headers as received.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// A header's value (first occurrence, name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// Whether the whole answer is here: a status without a body, a body as
    /// long as `content-length` says, or chunked (parsed only once whole);
    /// an EOF-delimited body never is.
    pub fn is_complete(&self) -> bool {
        match self.header("content-length").map(str::parse::<usize>) {
            _ if matches!(self.status, 101 | 204 | 304) => true,
            Some(Ok(len)) => self.body.len() >= len,
            _ => self.header("transfer-encoding").is_some(),
        }
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request with `host`, `content-length` (or chunked framing when
/// `chunked`) and `connection: close` added.
pub fn request(
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
    chunked: bool,
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n")
        .into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
        for piece in body.chunks(7) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
    }
    out
}

/// Sends `bytes` on a fresh connection and reads the answer (until it is
/// complete or the server closes; the head of a 101) within `wait`.
pub async fn exchange(addr: &str, bytes: &[u8], wait: Duration) -> Result<RawResponse, String> {
    let run = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        // The server may answer (and close) before it read everything.
        let written = stream.write_all(bytes).await;
        let mut buf = Vec::new();
        let mut piece = vec![0u8; 16 * 1024];
        // A whole answer is enough: the server may wait a while for the rest
        // of a body it did not read before it closes. HEAD gets a head.
        let head_only = bytes.starts_with(b"HEAD ");
        loop {
            if let Some(response) = parse(&buf).filter(|r| head_only || r.is_complete()) {
                return Ok(response);
            }
            match stream.read(&mut piece).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&piece[..n]),
                // A reset after the answer arrived still leaves the answer.
                Err(e) if buf.is_empty() => return Err(format!("read: {e} (write: {written:?})")),
                Err(_) => break,
            }
        }
        parse(&buf).ok_or_else(|| {
            format!(
                "no complete response (write: {written:?}): {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(300)])
            )
        })
    };
    tokio::time::timeout(wait, run)
        .await
        .map_err(|_| format!("no answer within {wait:?}"))?
}

/// Parses one response from `buf`, skipping `100 Continue`: `None` until
/// its head (and a chunked body) is whole; a body with a length holds what
/// arrived of it (see [`RawResponse::is_complete`]).
pub fn parse(buf: &[u8]) -> Option<RawResponse> {
    let mut rest = buf;
    loop {
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
        let after = &rest[end + 4..];
        if status == 100 {
            rest = after;
            continue;
        }
        let mut response = RawResponse {
            status,
            head,
            body: Vec::new(),
        };
        if status == 101 {
            return Some(response);
        }
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        response.body = if chunked {
            dechunk(after)?
        } else {
            match response.header("content-length") {
                Some(len) => after[..len.parse::<usize>().ok()?.min(after.len())].to_vec(),
                None => after.to_vec(),
            }
        };
        return Some(response);
    }
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

pub fn is_snake_case(code: &str) -> bool {
    !code.is_empty()
        && code.starts_with(|c: char| c.is_ascii_lowercase())
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Why an error answer breaks the contract (`None` when it keeps it):
/// JSON `{"error": <snake_case>, "detail": <string>}`.
pub fn contract_violation(response: &RawResponse) -> Option<String> {
    let content_type = response.header("content-type").unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Some(format!("content-type {content_type:?}"));
    }
    let Some(body) = response.json() else {
        return Some("body is not JSON".into());
    };
    match (body["error"].as_str(), body["detail"].as_str()) {
        (Some(code), Some(_)) if is_snake_case(code) => None,
        _ => Some(format!("not an error object: {body}")),
    }
}

/// Raises the soft limit on open files towards the hard one, so hundreds of
/// sockets (both ends live in this process) fit.
pub fn raise_fd_limit(wanted: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < wanted {
        setrlimit(Resource::RLIMIT_NOFILE, wanted.min(hard), hard).expect("setrlimit");
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(soft >= wanted, "open-file limit {soft} < {wanted}");
}

/// Opens a WebSocket at `path` (with query) on the app at `base_url`,
/// with extra headers; the refusal's status and body when not upgraded.
pub async fn ws_open(
    base_url: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, String)> {
    let url = format!("{}{path}", base_url.replacen("http", "ws", 1));
    match tokio_tungstenite::connect_async(crate::harness::ws_request(&url, headers)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            Err((
                response.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            ))
        }
        Err(e) => panic!("WebSocket connect to {path} failed: {e}"),
    }
}
