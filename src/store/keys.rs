//! Every key the broker writes, in one place. The backend adds the
//! configured prefix; these are the names after it.

use std::fmt;

use crate::domain::Id;

/// A storage key. Only the constructors below make one, so no request can
/// choose an arbitrary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(String);

impl Key {
    /// The key without the backend's prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds a key the broker itself stored earlier (the in-memory
    /// store hands keys back as strings when replaying into Redis).
    pub(crate) fn from_stored(name: String) -> Self {
        Self(name)
    }

    /// What kind of record lives under this key, for replay and reports.
    pub fn kind(&self) -> KeyKind {
        if self.0.starts_with("rtc:token:") {
            KeyKind::Token
        } else if self.0.starts_with("rtc:revoked:") {
            KeyKind::Revocation
        } else if self.0.starts_with("session:") {
            KeyKind::Session
        } else {
            KeyKind::Other
        }
    }
}

/// The kinds of records the broker stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Token,
    Revocation,
    Session,
    Other,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `rtc:token:<session_id>`, exactly: the Node deployments read the same
/// key, so it carries no hash tag.
pub fn token(session_id: &Id) -> Key {
    Key(format!("rtc:token:{session_id}"))
}

/// Marks a revoked token id until the token would have expired anyway.
pub fn revoked_token(jti: &str) -> Key {
    Key(format!("rtc:revoked:{jti}"))
}

/// A session record with its members. The hash tag keeps any later
/// per-session keys (`session:{<id>}:...`) in the same cluster slot.
pub fn session(id: &Id) -> Key {
    Key(format!("session:{{{id}}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_the_contract() {
        let id = Id::parse("s1").unwrap();
        assert_eq!(token(&id).as_str(), "rtc:token:s1");
        assert_eq!(session(&id).as_str(), "session:{s1}");
        assert_eq!(revoked_token("j").as_str(), "rtc:revoked:j");
        assert_eq!(token(&id).kind(), KeyKind::Token);
        assert_eq!(session(&id).kind(), KeyKind::Session);
        assert_eq!(revoked_token("j").kind(), KeyKind::Revocation);
    }
}
