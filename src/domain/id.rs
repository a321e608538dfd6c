use std::fmt;

use serde::{Serialize, Serializer};

/// Longest id accepted anywhere (session, member, room, recording).
pub const MAX_ID_LEN: usize = 128;

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ids are 1-128 characters of A-Z a-z 0-9 _ . : - and may not contain \"..\"")]
pub struct IdError;

/// An identifier safe to put in a Redis key, a URL and a file name:
/// 1–128 characters of `[A-Za-z0-9_.:-]`, never `.`, `..` or containing `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    /// Parses untrusted input into an id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
        let ok = !s.is_empty()
            && s.len() <= MAX_ID_LEN
            && s.chars().all(allowed)
            && s != "."
            && !s.contains("..");
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(IdError)
        }
    }

    /// A fresh random id (UUID v4), for records created without one.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The id as it goes into keys, URLs and logs.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Ids in the OpenAPI document: the form `parse` accepts.
impl utoipa::PartialSchema for Id {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_ID_LEN))
            .pattern(Some(r"^(?!\.$)(?!.*\.\.)[A-Za-z0-9_.:-]+$"))
            .description(Some(
                "1-128 characters of [A-Za-z0-9_.:-], not `.` and not containing `..`",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Id {}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Id::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_id_alphabet() {
        for ok in [
            "s1",
            "a.b",
            "room:1",
            "A_b-C.d:e",
            &"x".repeat(128),
            ".a",
            "a.",
        ] {
            assert!(Id::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        let long = "x".repeat(129);
        for bad in [
            "", ".", "..", "a..b", "a/b", "../x", "a b", "é", "a\u{0}", "a%2F", &long, "a\n",
        ] {
            assert_eq!(Id::parse(bad), Err(IdError), "{bad:?}");
        }
    }
}
