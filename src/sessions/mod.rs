//! Session records: metadata plus members, one stored value per session so
//! the record and its members are written atomically and expire together.

mod record;
mod service;

pub use record::{Member, SessionRecord};
pub use service::{NewMember, NewSession, SessionService};

use crate::store::StoreError;

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no such session (unknown or expired)")]
    NotFound,
    #[error("a session with this id already exists")]
    Exists,
    #[error("this member is already in the session")]
    MemberExists,
    #[error("no such member in this session")]
    MemberNotFound,
    #[error("session metadata would exceed {0} bytes")]
    TooLarge(usize),
    #[error("this session already has the maximum of {0} members")]
    Full(usize),
    /// Too many concurrent writers on one record; the caller may retry.
    #[error("session is being updated concurrently, retry")]
    Contended,
    /// Serving from the fallback, and the session is not in memory: it may
    /// exist only in Redis, so a write must wait rather than invent it.
    #[error("this session may exist only in Redis, which is unreachable; retry when it returns")]
    OnlyInRedis,
    /// A stored value this broker cannot read (written by something else).
    #[error("stored session record is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
