use std::time::Duration;

/// Why a value is not an acceptable TTL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ttl_seconds must be an integer from 1 to {max}")]
pub struct TtlError {
    pub max: u64,
}

/// A lifetime in whole seconds, at least 1 and at most a configured maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(u64);

impl Ttl {
    /// Parses an untrusted JSON value: only integers 1..=max are accepted
    /// (no strings, fractions, negatives or zero).
    pub fn from_json(value: &serde_json::Value, max: u64) -> Result<Self, TtlError> {
        value
            .as_u64()
            .ok_or(TtlError { max })
            .and_then(|secs| Self::new(secs, max))
    }

    /// A TTL from trusted seconds, still bounded by `max`.
    pub fn new(secs: u64, max: u64) -> Result<Self, TtlError> {
        if (1..=max).contains(&secs) {
            Ok(Self(secs))
        } else {
            Err(TtlError { max })
        }
    }

    /// A TTL from a remaining lifetime, rounded up so a live entry never
    /// gets a zero TTL. `None` when nothing remains.
    pub fn from_remaining(d: Duration) -> Option<Self> {
        if d.is_zero() {
            return None;
        }
        Some(Self(d.as_secs() + u64::from(d.subsec_nanos() > 0)))
    }

    /// Whole seconds, the unit of the wire contract.
    pub fn secs(self) -> u64 {
        self.0
    }

    /// The same lifetime as a `Duration`, for the store.
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_integers_in_range() {
        assert_eq!(Ttl::from_json(&json!(1), 10).unwrap().secs(), 1);
        assert_eq!(Ttl::from_json(&json!(10), 10).unwrap().secs(), 10);
        for bad in [
            json!(0),
            json!(-1),
            json!(11),
            json!(1.5),
            json!("5"),
            json!(null),
            json!(true),
        ] {
            assert!(Ttl::from_json(&bad, 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn remaining_rounds_up() {
        assert_eq!(
            Ttl::from_remaining(Duration::from_millis(1))
                .unwrap()
                .secs(),
            1
        );
        assert_eq!(
            Ttl::from_remaining(Duration::from_millis(1500))
                .unwrap()
                .secs(),
            2
        );
        assert!(Ttl::from_remaining(Duration::ZERO).is_none());
    }
}
