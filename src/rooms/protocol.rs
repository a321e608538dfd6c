//! The section-6 wire protocol as types: client frames parsed once at the
//! edge (anything else is an `invalid_frame` error frame), server frames
//! rendered once per room and shared by every socket that receives them.

use bytestring::ByteString;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::extract::{parse_json, JsonLimits};

/// What a client may send.
#[derive(Debug)]
pub enum ClientFrame {
    /// `{"type": "publish", "data": <json>, "ref"?: <string|integer>}`.
    Publish {
        data: Box<RawValue>,
        reference: Option<Ref>,
    },
    /// `{"type": "ping"}`.
    Ping,
    /// `{"type": "refresh", "token": "<RTC token>"}`.
    Refresh(String),
}

/// A client's name for one publish, echoed in its ack or error frame: a
/// string of at most [`MAX_REF_CHARS`] characters or an integer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    Text(String),
    Int(i64),
}

/// Longest string `ref` a client may give.
pub const MAX_REF_CHARS: usize = 128;
/// Longest token a `refresh` may carry (ours are well under 2 KiB).
const MAX_TOKEN_BYTES: usize = 8192;

impl Ref {
    fn parse(raw: &RawValue) -> Result<Self, FrameError> {
        match serde_json::from_str::<serde_json::Value>(raw.get()) {
            Ok(serde_json::Value::String(s)) if s.chars().count() <= MAX_REF_CHARS => {
                Ok(Self::Text(s))
            }
            Ok(serde_json::Value::Number(n)) if n.as_i64().is_some() => {
                Ok(Self::Int(n.as_i64().unwrap_or_default()))
            }
            _ => Err(FrameError(format!(
                "ref must be a string of at most {MAX_REF_CHARS} characters or an integer"
            ))),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Text(s) => s.as_str().into(),
            Self::Int(n) => (*n).into(),
        }
    }
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: String,
    data: Option<Box<RawValue>>,
    #[serde(rename = "ref")]
    reference: Option<Box<RawValue>>,
    token: Option<serde_json::Value>,
}

/// Why a client frame was refused; the text goes into the error frame.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FrameError(pub String);

impl ClientFrame {
    /// Parses a text frame. The frame size is bounded by the socket's
    /// frame limit before this runs; nesting by `max_depth`.
    pub fn parse(text: &str, max_depth: usize) -> Result<Self, FrameError> {
        let limits = JsonLimits {
            max_bytes: text.len().max(1),
            max_depth,
            ..JsonLimits::default()
        };
        let raw: RawFrame = parse_json(text.as_bytes(), limits)
            .map_err(|e| FrameError(format!("not a frame of this protocol: {e}")))?;
        match raw.kind.as_str() {
            "publish" => {
                let data = raw
                    .data
                    .ok_or_else(|| FrameError("publish needs a data field".into()))?;
                let reference = raw.reference.as_deref().map(Ref::parse).transpose()?;
                Ok(ClientFrame::Publish { data, reference })
            }
            "ping" => Ok(ClientFrame::Ping),
            "refresh" => match raw.token {
                Some(serde_json::Value::String(t)) if !t.is_empty() && t.len() <= MAX_TOKEN_BYTES => {
                    Ok(ClientFrame::Refresh(t))
                }
                _ => Err(FrameError(format!(
                    "refresh needs a token field: a non-empty string of at most {MAX_TOKEN_BYTES} bytes"
                ))),
            },
            other => Err(FrameError(format!(
                "unknown frame type {:?}; expected publish, ping or refresh",
                truncate(other, 64)
            ))),
        }
    }

    /// The `ref` of a frame, for the error frame that refuses it.
    pub fn reference(&self) -> Option<&Ref> {
        match self {
            Self::Publish { reference, .. } => reference.as_ref(),
            _ => None,
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Presence events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceKind {
    Join,
    Leave,
}

impl PresenceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Leave => "leave",
        }
    }
}

/// The welcome frame's content.
pub struct Welcome<'a> {
    pub room: &'a str,
    pub member_id: &'a str,
    pub members: &'a [String],
    pub epoch: &'a str,
    pub last_id: u64,
    /// Present only when the client asked to resume.
    pub recovered: Option<bool>,
    /// The token's `exp` (unix seconds): refresh before it.
    pub expires_at: u64,
}

/// Server frames, rendered to the text sent on the socket.
pub mod render {
    use super::*;

    pub fn welcome(w: &Welcome<'_>) -> ByteString {
        let mut frame = json!({
            "type": "welcome",
            "room": w.room,
            "member_id": w.member_id,
            "members": w.members,
            "epoch": w.epoch,
            "last_id": w.last_id,
            "expires_at": w.expires_at,
        });
        if let (Some(recovered), Some(map)) = (w.recovered, frame.as_object_mut()) {
            map.insert("recovered".into(), recovered.into());
        }
        frame.to_string().into()
    }

    /// A message; `data` is spliced in as the JSON the publisher sent.
    pub fn message(room: &str, from: &str, data: &RawValue, id: u64) -> ByteString {
        let room = serde_json::Value::from(room);
        let from = serde_json::Value::from(from);
        format!(
            r#"{{"type":"message","room":{room},"from":{from},"data":{},"id":{id}}}"#,
            data.get()
        )
        .into()
    }

    pub fn presence(kind: PresenceKind, member_id: &str) -> ByteString {
        json!({"type": "presence", "event": kind.as_str(), "member_id": member_id})
            .to_string()
            .into()
    }

    pub fn pong() -> ByteString {
        ByteString::from_static(r#"{"type":"pong"}"#)
    }

    /// An error frame; it carries the `ref` of the publish it refuses.
    pub fn error(code: &str, detail: &str, reference: Option<&Ref>) -> ByteString {
        let mut frame = json!({"type": "error", "error": code, "detail": detail});
        if let (Some(r), Some(map)) = (reference, frame.as_object_mut()) {
            map.insert("ref".into(), r.to_json());
        }
        frame.to_string().into()
    }

    /// A publish was committed: `Some(id)` from Redis (or memory), `None`
    /// held in the outage buffer.
    pub fn ack(reference: &Ref, id: Option<u64>) -> ByteString {
        match id {
            Some(id) => json!({"type": "ack", "ref": reference.to_json(), "id": id}),
            None => {
                json!({"type": "ack", "ref": reference.to_json(), "id": null, "buffered": true})
            }
        }
        .to_string()
        .into()
    }

    pub fn refreshed(expires_at: u64) -> ByteString {
        json!({"type": "refreshed", "expires_at": expires_at})
            .to_string()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_two_client_frames() {
        match ClientFrame::parse(r#"{"type":"publish","data":{"a":[1,2]}}"#, 32).unwrap() {
            ClientFrame::Publish { data, reference } => {
                assert_eq!(data.get(), r#"{"a":[1,2]}"#);
                assert_eq!(reference, None);
            }
            other => panic!("{other:?}"),
        }
        for (frame, expected) in [
            (
                r#"{"type":"publish","data":1,"ref":"a-1"}"#,
                Ref::Text("a-1".into()),
            ),
            (r#"{"type":"publish","data":1,"ref":-7}"#, Ref::Int(-7)),
        ] {
            let parsed = ClientFrame::parse(frame, 32).unwrap();
            assert_eq!(parsed.reference(), Some(&expected), "{frame}");
        }
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"refresh","token":"abc"}"#, 32),
            Ok(ClientFrame::Refresh(t)) if t == "abc"
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"ping"}"#, 32),
            Ok(ClientFrame::Ping)
        ));
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"type":5}"#,
            r#"{"type":"publish"}"#,
            r#"{"type":"subscribe","data":1}"#,
            r#"{"type":"publish","data":[[[[1]]]]}"#,
            r#"{"type":"publish","data":1,"ref":1.5}"#,
            r#"{"type":"publish","data":1,"ref":{"a":1}}"#,
            r#"{"type":"refresh"}"#,
            r#"{"type":"refresh","token":""}"#,
            r#"{"type":"refresh","token":5}"#,
        ] {
            assert!(ClientFrame::parse(bad, 3).is_err(), "{bad}");
        }
    }

    #[test]
    fn message_frames_are_valid_json_with_escaped_names() {
        let data = RawValue::from_string(r#"{"k":"v\"x"}"#.into()).unwrap();
        let frame = render::message("r\"1", "al\\ice", &data, 7);
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["room"], "r\"1");
        assert_eq!(v["from"], "al\\ice");
        assert_eq!(v["data"]["k"], "v\"x");
        assert_eq!(v["id"], 7);
    }

    #[test]
    fn acks_and_errors_carry_the_ref() {
        let r = Ref::Text("x".into());
        let ack: serde_json::Value = serde_json::from_str(&render::ack(&r, Some(3))).unwrap();
        assert_eq!(ack, json!({"type": "ack", "ref": "x", "id": 3}));
        let ack: serde_json::Value =
            serde_json::from_str(&render::ack(&Ref::Int(9), None)).unwrap();
        assert_eq!(
            ack,
            json!({"type": "ack", "ref": 9, "id": null, "buffered": true})
        );
        let e: serde_json::Value =
            serde_json::from_str(&render::error("rate_limited", "slow", Some(&r))).unwrap();
        assert_eq!(e["ref"], "x");
        let e: serde_json::Value = serde_json::from_str(&render::error("a", "b", None)).unwrap();
        assert!(e.get("ref").is_none());
    }
}
