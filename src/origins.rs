//! The one list of browser origins allowed to call the broker
//! (`cors.allowed_origins`), used by the WebSocket `Origin` check and the
//! HTTP CORS layer (`cors`). A page served by the broker itself (same
//! origin as the request's `Host`, e.g. the console) is always allowed.

use actix_web::http::header::{self, HeaderMap};

use crate::config::RunEnv;

/// Parsed `cors.allowed_origins`.
#[derive(Debug, Clone)]
pub struct AllowedOrigins {
    list: Vec<String>,
    any: bool,
}

impl AllowedOrigins {
    /// `*` in the list allows any origin; an empty list does in development
    /// only.
    pub fn new(list: &[String], run_env: RunEnv) -> Self {
        let list: Vec<String> = list
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .collect();
        let any =
            list.iter().any(|o| o == "*") || (list.is_empty() && run_env == RunEnv::Development);
        Self { list, any }
    }

    /// Whether a request with this `Origin` header may proceed. No header
    /// means no browser (a server-side client): allowed, the token decides.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.any => true,
            Some(origin) => {
                let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
                self.list.contains(&origin)
            }
        }
    }

    /// Whether a request with these headers may proceed: its `Origin` (one
    /// that is not text counts as not allowed) is listed, or is the
    /// broker's own (same scheme-less authority as `Host`).
    pub fn admits(&self, origin: Option<&str>, headers: &HeaderMap) -> bool {
        self.allows(origin) || origin.is_some_and(|o| same_origin(o, headers))
    }

    /// The check of a WebSocket handshake (403 `origin_forbidden`).
    pub fn check(&self, req: &actix_web::HttpRequest) -> Result<(), crate::error::ApiError> {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .map(|v| v.to_str().unwrap_or("\u{0}"));
        if self.admits(origin, req.headers()) {
            Ok(())
        } else {
            Err(crate::error::ApiError::OriginForbidden)
        }
    }
}

/// `https://host:port` against the request's `Host: host:port`.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| !a.is_empty() && a.eq_ignore_ascii_case(host.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_exactly_ignoring_case_and_a_trailing_slash() {
        let origins = AllowedOrigins::new(&["https://App.example.com/".into()], RunEnv::Production);
        assert!(origins.allows(Some("https://app.example.com")));
        assert!(origins.allows(None));
        assert!(!origins.allows(Some("https://app.example.com.evil.org")));
        assert!(!origins.allows(Some("http://app.example.com")));
        assert!(!origins.allows(Some("null")));
    }

    #[test]
    fn empty_means_any_in_development_only() {
        assert!(AllowedOrigins::new(&[], RunEnv::Development).allows(Some("http://x")));
        assert!(!AllowedOrigins::new(&[], RunEnv::Production).allows(Some("http://x")));
        assert!(AllowedOrigins::new(&["*".into()], RunEnv::Production).allows(Some("http://x")));
    }
}
