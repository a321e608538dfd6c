//! Every key the broker writes, in one place. The backend adds the
//! configured prefix; these are the names after it.
//!
//! A [`Key`] carries its [`KeyKind`] from the moment it is built, so the
//! store never has to guess what a name holds: replay applies each kind's
//! conflict rule (newest write, tombstone, maximum for counters) and counts
//! per kind. Each prefix is spelled once, in [`KeyKind::prefix`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::Id;

/// The kinds of records the broker stores. Matches on it are exhaustive on
/// purpose: a new kind of key must say how it replays and how it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// A session's live RTC token (`rtc:token:<session_id>`).
    Token,
    /// A revoked token id (`rtc:revoked:<jti>`).
    Revocation,
    /// A session record with its members (`session:{<id>}`).
    Session,
    /// A counter that only moves up, e.g. a recording's chunk index
    /// (`recording:<id>:chunk_index`).
    Counter,
    /// A recording's state (`rec:{<id>}`).
    Recording,
}

impl KeyKind {
    /// Every kind, for reports and for recognising names.
    pub const ALL: [KeyKind; 5] = [
        Self::Token,
        Self::Revocation,
        Self::Session,
        Self::Counter,
        Self::Recording,
    ];

    /// How the names of this kind begin: the one place each is spelled.
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Token => "rtc:token:",
            Self::Revocation => "rtc:revoked:",
            Self::Session => "session:",
            Self::Counter => "recording:",
            Self::Recording => "rec:",
        }
    }

    /// The kind of a name written by a broker whose journal predates
    /// kinds on disk; `None` for a name no constructor below makes.
    pub fn of_legacy_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| name.starts_with(k.prefix()))
    }
}

/// A storage key. Only the constructors below make one, so no request can
/// choose an arbitrary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    name: String,
    kind: KeyKind,
}

impl Key {
    fn new(kind: KeyKind, rest: fmt::Arguments<'_>) -> Self {
        Self {
            name: format!("{}{rest}", kind.prefix()),
            kind,
        }
    }

    /// The key without the backend's prefix.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// What kind of record lives under this key.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Rebuilds a key the broker itself stored earlier (the fallback's
    /// journal hands keys back with their kind when replaying into Redis).
    pub(crate) fn restore(name: String, kind: KeyKind) -> Self {
        Self { name, kind }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// `rtc:token:<session_id>`, exactly: the Node deployments read the same
/// key, so it carries no hash tag.
pub fn token(session_id: &Id) -> Key {
    Key::new(KeyKind::Token, format_args!("{session_id}"))
}

/// Marks a revoked token id until the token would have expired anyway.
pub fn revoked_token(jti: &str) -> Key {
    Key::new(KeyKind::Revocation, format_args!("{jti}"))
}

/// A session record with its members. The hash tag keeps any later
/// per-session keys (`session:{<id>}:...`) in the same cluster slot.
pub fn session(id: &Id) -> Key {
    Key::new(KeyKind::Session, format_args!("{{{id}}}"))
}

/// `recording:<id>:chunk_index`, exactly the Node deployments' counter, so
/// both can serve one recording during a migration (SPEC section 7).
pub fn recording_chunk_index(record_id: &Id) -> Key {
    Key::new(KeyKind::Counter, format_args!("{record_id}:chunk_index"))
}

/// A recording's state record; the hash tag keeps any later per-recording
/// keys in its slot.
pub fn recording(record_id: &Id) -> Key {
    Key::new(KeyKind::Recording, format_args!("{{{record_id}}}"))
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
        assert_eq!(
            recording_chunk_index(&id).as_str(),
            "recording:s1:chunk_index"
        );
        assert_eq!(token(&id).kind(), KeyKind::Token);
        assert_eq!(session(&id).kind(), KeyKind::Session);
        assert_eq!(revoked_token("j").kind(), KeyKind::Revocation);
        assert_eq!(recording_chunk_index(&id).kind(), KeyKind::Counter);
        assert_eq!(recording(&id).as_str(), "rec:{s1}");
        assert_eq!(recording(&id).kind(), KeyKind::Recording);
    }

    #[test]
    fn legacy_names_map_to_the_kind_their_constructor_gives() {
        let id = Id::parse("r1").unwrap();
        for key in [
            token(&id),
            revoked_token("j"),
            session(&id),
            recording_chunk_index(&id),
            recording(&id),
        ] {
            assert_eq!(KeyKind::of_legacy_name(key.as_str()), Some(key.kind()));
        }
        assert_eq!(KeyKind::of_legacy_name("other:x"), None);
    }
}
