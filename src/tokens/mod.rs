//! RTC tokens: signing keys, claims, and the service that issues, stores,
//! fetches, revokes and verifies them.

mod claims;
mod keyfile;
mod revocations;
mod service;
mod signing;

pub use claims::{Claims, Grants, StoredClaims, UploadClaims, UPLOAD_USE};
pub use revocations::{Revocations, SYNC_EVERY};
pub use service::{
    revocation, stored_claims, IssueRequest, IssuedToken, StoredToken, TokenService,
};
pub use signing::{KeyError, SigningKeys};

use crate::store::StoreError;

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No live token is stored for the session.
    #[error("no live RTC token for this session")]
    NoToken,
    /// The presented token is not one this broker accepts.
    #[error("{0}")]
    Invalid(String),
    /// Signing failed: a key problem on our side, not the caller's.
    #[error("token signing failed: {0}")]
    Signing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
