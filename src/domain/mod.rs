//! Validated values: once a request field becomes one of these types, the
//! rest of the broker can rely on its form.

mod id;
mod ttl;

pub use id::{Id, IdError};
pub use ttl::{Ttl, TtlError};
