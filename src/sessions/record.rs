use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::Id;

/// A session as stored and as returned on the wire (SPEC section 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionRecord {
    pub session_id: Id,
    pub created_at: u64,
    pub updated_at: u64,
    pub expires_at: u64,
    /// The TTL the record was created with; every write slides expiry by it.
    pub ttl_seconds: u64,
    pub metadata: Map<String, Value>,
    pub members: Vec<Member>,
}

/// One participant of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    pub member_id: Id,
    pub display_name: String,
    pub role: String,
    pub joined_at: u64,
}

impl SessionRecord {
    /// Shallow merge: each key replaces the old one, a `null` removes it.
    pub fn merge_metadata(&mut self, patch: Map<String, Value>) {
        for (k, v) in patch {
            if v.is_null() {
                self.metadata.remove(&k);
            } else {
                self.metadata.insert(k, v);
            }
        }
    }

    /// Moves `updated_at` and `expires_at` to now: the sliding TTL.
    pub fn touch(&mut self, now: u64) {
        self.updated_at = now;
        self.expires_at = now + self.ttl_seconds;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_is_shallow_and_null_removes() {
        let mut r = SessionRecord {
            session_id: Id::parse("s").unwrap(),
            created_at: 0,
            updated_at: 0,
            expires_at: 10,
            ttl_seconds: 10,
            metadata: json!({"a": 1, "b": {"x": 1}, "c": 3})
                .as_object()
                .unwrap()
                .clone(),
            members: vec![],
        };
        r.merge_metadata(
            json!({"a": null, "b": {"y": 2}, "d": 4})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(
            Value::Object(r.metadata.clone()),
            json!({"b": {"y": 2}, "c": 3, "d": 4})
        );
        r.touch(100);
        assert_eq!((r.updated_at, r.expires_at), (100, 110));
    }
}
