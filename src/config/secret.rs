//! How secrets in the configuration are kept and shown.
//!
//! Token secrets, API keys, the Redis password and the Redis URL (which may
//! carry a password) are [`secrecy::SecretString`]: its `Debug` prints
//! `[REDACTED]`, it has no `Display`, and it is wiped from memory on drop.
//! Reading one takes an explicit `expose_secret()`, used only where the
//! value is really needed: the signing keys, the API key digests and the
//! Redis connection info (plus emptiness and production checks here).
//!
//! `secrecy` deliberately gives `SecretString` no `Serialize`, so a secret
//! field of the `Serialize` settings does not compile without one of the
//! `serialize_with` functions below: `check-config` cannot print a secret
//! that someone forgot to add to a redaction list.

use secrecy::{ExposeSecret, SecretString};
use serde::Serializer;

/// What `check-config` shows instead of a configured secret.
pub const REDACTED: &str = "<redacted>";

/// `<redacted>` for a configured secret; an unset one stays empty, so the
/// output still tells whether it is set.
fn shown(secret: &SecretString) -> &'static str {
    if secret.expose_secret().is_empty() {
        ""
    } else {
        REDACTED
    }
}

/// `serialize_with` for one secret.
pub(super) fn redact<S: Serializer>(secret: &SecretString, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(shown(secret))
}

/// `serialize_with` for a list of secrets: one `<redacted>` per entry.
pub(super) fn redact_each<S: Serializer>(
    secrets: &[SecretString],
    out: S,
) -> Result<S::Ok, S::Error> {
    out.collect_seq(secrets.iter().map(shown))
}

/// `serialize_with` for a Redis URL: shown with its password hidden.
pub(super) fn redact_url<S: Serializer>(url: &SecretString, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(&redacted_url(url.expose_secret()))
}

/// Hides a password in `redis://user:password@host` URLs (and in anything
/// with a `user:password@` part, even without a scheme).
fn redacted_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (&url[..scheme.len() + 3], rest),
        None => ("", url),
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}{user}:{REDACTED}@{host}")
        }
        None => url.to_string(),
    }
}
