//! Every key the broker writes, in one place. The backend adds the
//! configured prefix; these are the names after it.

use std::fmt;

use crate::domain::Id;

/// A storage key. Only the constructors below make one, so no request can
/// choose an arbitrary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(String);

impl Key {
    pub fn as_str(&self) -> &str {
        &self.0
    }
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
    }
}
