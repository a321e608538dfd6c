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
    /// `{"type": "publish", "data": <json>}`.
    Publish(Box<RawValue>),
    /// `{"type": "ping"}`.
    Ping,
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: String,
    data: Option<Box<RawValue>>,
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
            "publish" => raw
                .data
                .map(ClientFrame::Publish)
                .ok_or_else(|| FrameError("publish needs a data field".into())),
            "ping" => Ok(ClientFrame::Ping),
            other => Err(FrameError(format!(
                "unknown frame type {:?}; expected publish or ping",
                truncate(other, 64)
            ))),
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

    pub fn error(code: &str, detail: &str) -> ByteString {
        json!({"type": "error", "error": code, "detail": detail})
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
            ClientFrame::Publish(data) => assert_eq!(data.get(), r#"{"a":[1,2]}"#),
            other => panic!("{other:?}"),
        }
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
}
