//! Which store serves right now. One enum holds the fact, so "in fallback"
//! and "why, since when" can never disagree.

use crate::clock::unix_now;
use crate::store::Migrated;

/// The outage being served from memory.
#[derive(Debug, Clone)]
pub struct Outage {
    pub reason: String,
    /// Unix seconds when the fallback began.
    pub since: u64,
    /// What this outage's replay attempts have moved so far (an attempt cut
    /// short by Redis failing again keeps its count for the next one).
    pub moved: Migrated,
}

/// Redis serves, or memory serves during an outage.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    #[default]
    Redis,
    Memory(Outage),
}

impl Mode {
    /// Switches to memory; false when already there (log once per outage).
    pub fn enter(&mut self, reason: String) -> bool {
        if matches!(self, Self::Memory(_)) {
            return false;
        }
        *self = Self::Memory(Outage {
            reason,
            since: unix_now(),
            moved: Migrated::default(),
        });
        true
    }

    /// Back to Redis; returns the outage that ended.
    pub fn leave(&mut self) -> Option<Outage> {
        match std::mem::take(self) {
            Self::Memory(outage) => Some(outage),
            Self::Redis => None,
        }
    }

    pub fn is_memory(&self) -> bool {
        matches!(self, Self::Memory(_))
    }

    pub fn outage(&self) -> Option<&Outage> {
        match self {
            Self::Memory(outage) => Some(outage),
            Self::Redis => None,
        }
    }

    pub fn outage_mut(&mut self) -> Option<&mut Outage> {
        match self {
            Self::Memory(outage) => Some(outage),
            Self::Redis => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entering_twice_keeps_the_first_reason() {
        let mut mode = Mode::default();
        assert!(mode.enter("first".into()));
        assert!(!mode.enter("second".into()));
        assert_eq!(mode.outage().map(|o| o.reason.as_str()), Some("first"));
        assert!(mode.leave().is_some());
        assert!(!mode.is_memory());
        assert!(mode.leave().is_none());
    }
}
