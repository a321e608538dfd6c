//! A minimal RESP2 reader for the subscriber connections.
//!
//! redis-rs's async pub/sub has no sharded subscriptions (`SSUBSCRIBE`) and
//! does not surface a server-sent `SUNSUBSCRIBE`, and its RESP3 push path
//! answers subscription commands out of band; a subscriber connection only
//! ever reads a handful of reply shapes, so it reads them itself. Commands
//! are encoded with redis-rs (`Cmd::get_packed_command`).

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Longest bulk string accepted (room messages are far smaller).
const MAX_BULK: usize = 64 * 1024 * 1024;
/// Most elements in one array reply.
const MAX_ARRAY: usize = 1 << 20;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a simple or bulk string.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Simple(s) => Some(s),
            Self::Bulk(Some(b)) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// A bulk string's bytes.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }
}

fn bad(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

async fn line<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if !buf.ends_with(b"\r\n") {
        return Err(bad("reply line without CRLF"));
    }
    buf.truncate(buf.len() - 2);
    String::from_utf8(buf).map_err(|_| bad("reply line is not UTF-8"))
}

fn length(text: &str, max: usize) -> std::io::Result<Option<usize>> {
    let n: i64 = text.parse().map_err(|_| bad("bad length"))?;
    match n {
        -1 => Ok(None),
        n if n >= 0 && (n as usize) <= max => Ok(Some(n as usize)),
        _ => Err(bad("length out of range")),
    }
}

/// Reads one reply. Nesting is bounded by what Redis sends (two levels for
/// pub/sub), and iterative reading keeps a hostile peer from recursing deep.
pub async fn read<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Reply> {
    // Stack of arrays being filled: (expected, items).
    let mut stack: Vec<(usize, Vec<Reply>)> = Vec::new();
    loop {
        let header = line(r).await?;
        let (kind, rest) = header.split_at(header.len().min(1));
        let mut value = match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse().map_err(|_| bad("bad integer"))?),
            "$" => match length(rest, MAX_BULK)? {
                None => Reply::Bulk(None),
                Some(n) => {
                    let mut data = vec![0u8; n + 2];
                    r.read_exact(&mut data).await?;
                    if !data.ends_with(b"\r\n") {
                        return Err(bad("bulk string without CRLF"));
                    }
                    data.truncate(n);
                    Reply::Bulk(Some(data))
                }
            },
            "*" => match length(rest, MAX_ARRAY)? {
                None => Reply::Array(None),
                Some(0) => Reply::Array(Some(Vec::new())),
                Some(n) => {
                    if stack.len() >= 8 {
                        return Err(bad("replies nested too deep"));
                    }
                    stack.push((n, Vec::with_capacity(n.min(64))));
                    continue;
                }
            },
            _ => return Err(bad("unknown reply type")),
        };
        // Fold the finished value into the arrays waiting for it.
        loop {
            match stack.last_mut() {
                None => return Ok(value),
                Some((expected, items)) => {
                    items.push(value);
                    if items.len() < *expected {
                        break;
                    }
                    let Some((_, items)) = stack.pop() else {
                        return Err(bad("reply stack underflow"));
                    };
                    value = Reply::Array(Some(items));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> std::io::Result<Reply> {
        let mut r = tokio::io::BufReader::new(bytes);
        read(&mut r).await
    }

    #[tokio::test]
    async fn reads_pubsub_shapes() {
        let msg = parse(b"*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$5\r\nhe\r\nl\r\n")
            .await
            .unwrap();
        assert_eq!(
            msg,
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"smessage".to_vec())),
                Reply::Bulk(Some(b"ch".to_vec())),
                Reply::Bulk(Some(b"he\r\nl".to_vec())),
            ]))
        );
        assert_eq!(
            parse(b"-MOVED 1 h:1\r\n").await.unwrap(),
            Reply::Error("MOVED 1 h:1".into())
        );
        assert_eq!(
            parse(b"*2\r\n*1\r\n:1\r\n+OK\r\n").await.unwrap(),
            Reply::Array(Some(vec![
                Reply::Array(Some(vec![Reply::Int(1)])),
                Reply::Simple("OK".into()),
            ]))
        );
    }

    #[tokio::test]
    async fn refuses_garbage_without_panicking() {
        for bad in [
            &b"?x\r\n"[..],
            b"$-5\r\n",
            b"*99999999999\r\n",
            b"$3\r\nab",
            b":x\r\n",
            b"+ok\n",
            b"",
        ] {
            assert!(parse(bad).await.is_err(), "{bad:?}");
        }
    }
}
