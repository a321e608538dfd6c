//! Rate limits (SPEC section 9): token issuance per client IP, management
//! writes per session id. Counted in Redis so the limit holds for the sum
//! of requests across instances; counted locally while Redis is down (each
//! instance then allows the limit on its own until Redis answers again).
//!
//! A refusal is 429 `rate_limited` with `Retry-After` and the standard
//! `RateLimit-Limit`/`-Remaining`/`-Reset`/`-Policy` headers; answers
//! within the limit carry the same headers, so clients can pace themselves.

mod client_ip;
mod counter;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpResponseBuilder;

pub use client_ip::{BadProxy, TrustedProxies};
use counter::Counters;

use crate::config::RateLimitSettings;
use crate::domain::Id;
use crate::store::RedisStore;

/// One limit: at most `limit` requests per `window` per subject.
#[derive(Debug, Clone, Copy)]
struct Policy {
    /// Names the policy in keys, metrics and the refusal's detail.
    name: &'static str,
    what: &'static str,
    limit: u64,
    window: Duration,
}

impl Policy {
    fn new(
        name: &'static str,
        what: &'static str,
        limit: u64,
        window_seconds: u64,
    ) -> Option<Self> {
        (limit > 0).then(|| Self {
            name,
            what,
            limit,
            window: Duration::from_secs(window_seconds.max(1)),
        })
    }
}

/// Where a subject stands in its window after one more request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window ends (at least 1).
    pub reset_seconds: u64,
    pub window_seconds: u64,
}

impl Quota {
    /// The `RateLimit-*` headers (draft-ietf-httpapi-ratelimit-headers).
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", self.reset_seconds.to_string()),
            (
                "ratelimit-policy",
                format!("{};w={}", self.limit, self.window_seconds),
            ),
        ]
    }

    /// Adds the headers to a response being built.
    pub fn insert_into(&self, response: &mut HttpResponseBuilder) {
        for header in self.headers() {
            response.insert_header(header);
        }
    }

    /// The tighter of two quotas (fewer requests left, then the later reset).
    fn tighter(self, other: Self) -> Self {
        if (other.remaining, std::cmp::Reverse(other.reset_seconds))
            < (self.remaining, std::cmp::Reverse(self.reset_seconds))
        {
            other
        } else {
            self
        }
    }
}

/// A request over a limit: answered 429 `rate_limited`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("too many {what}; retry after {} s", quota.reset_seconds)]
pub struct Exceeded {
    what: &'static str,
    pub quota: Quota,
}

impl Exceeded {
    /// `Retry-After` and the `RateLimit-*` headers of the refusal.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("retry-after", self.quota.reset_seconds.to_string())];
        headers.extend(self.quota.headers());
        headers
    }
}

/// The instance's rate limiter. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    counters: Counters,
    proxies: Arc<TrustedProxies>,
    tokens_per_ip: Option<Policy>,
    session_writes: Option<Policy>,
    refused: Arc<[AtomicU64; 2]>,
}

impl RateLimiter {
    /// The limits of `settings`, counted in `redis` when given.
    pub fn new(settings: &RateLimitSettings, redis: Option<RedisStore>) -> Result<Self, BadProxy> {
        let window = settings.window_seconds;
        Ok(Self {
            counters: Counters::new(redis),
            proxies: Arc::new(TrustedProxies::parse(&settings.trusted_proxies)?),
            tokens_per_ip: Policy::new(
                "tokens_per_ip",
                "token requests from this client",
                settings.tokens_per_window,
                window,
            ),
            session_writes: Policy::new(
                "session_writes",
                "writes for this session",
                settings.session_writes_per_window,
                window,
            ),
            refused: Arc::default(),
        })
    }

    /// Counts a token issuance against the client's IP and the session's
    /// writes; `None` when neither limit is on.
    pub async fn token_issue(
        &self,
        req: &actix_web::HttpRequest,
        session: &Id,
    ) -> Result<Option<Quota>, Exceeded> {
        let by_ip = async {
            match (self.tokens_per_ip, self.proxies.client_ip(req)) {
                (Some(policy), Some(ip)) => {
                    let subject = client_ip::subject(ip);
                    self.count(0, policy, &subject).await.map(Some)
                }
                _ => Ok(None),
            }
        };
        // Both windows at once: one round trip's latency, not two.
        let (by_ip, by_session) = futures_util::join!(by_ip, self.session_write(session));
        Ok(match (by_ip?, by_session?) {
            (Some(a), Some(b)) => Some(a.tighter(b)),
            (a, b) => a.or(b),
        })
    }

    /// Counts a management write for one session id.
    pub async fn session_write(&self, session: &Id) -> Result<Option<Quota>, Exceeded> {
        match self.session_writes {
            Some(policy) => self.count(1, policy, session.as_str()).await.map(Some),
            None => Ok(None),
        }
    }

    /// Requests refused so far, by policy name (for metrics).
    pub fn refused(&self) -> [(&'static str, u64); 2] {
        [
            ("tokens_per_ip", self.refused[0].load(Ordering::Relaxed)),
            ("session_writes", self.refused[1].load(Ordering::Relaxed)),
        ]
    }

    async fn count(&self, slot: usize, policy: Policy, subject: &str) -> Result<Quota, Exceeded> {
        // The braces are a cluster hash tag: the whole name is one slot.
        let key = format!("ratelimit:{{{}:{subject}}}", policy.name);
        let hit = self.counters.hit(&key, policy.window).await;
        let quota = Quota {
            limit: policy.limit,
            remaining: policy.limit.saturating_sub(hit.count),
            reset_seconds: hit.reset_in.as_millis().div_ceil(1000).max(1) as u64,
            window_seconds: policy.window.as_secs(),
        };
        if hit.count > policy.limit {
            self.refused[slot].fetch_add(1, Ordering::Relaxed);
            tracing::info!(policy = policy.name, "request refused: rate limited");
            return Err(Exceeded {
                what: policy.what,
                quota,
            });
        }
        Ok(quota)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(tokens: u64, sessions: u64) -> RateLimitSettings {
        RateLimitSettings {
            tokens_per_window: tokens,
            session_writes_per_window: sessions,
            window_seconds: 60,
            trusted_proxies: vec![],
        }
    }

    #[actix_web::test]
    async fn refuses_past_the_limit_with_headers() {
        let limiter = RateLimiter::new(&settings(2, 0), None).unwrap();
        let req = actix_web::test::TestRequest::default()
            .peer_addr("192.0.2.1:4000".parse().unwrap())
            .to_http_request();
        let s = Id::parse("s1").unwrap();
        let first = limiter.token_issue(&req, &s).await.unwrap().unwrap();
        assert_eq!((first.limit, first.remaining), (2, 1));
        assert_eq!(
            limiter
                .token_issue(&req, &s)
                .await
                .unwrap()
                .unwrap()
                .remaining,
            0
        );
        let refused = limiter.token_issue(&req, &s).await.unwrap_err();
        let headers = refused.headers();
        assert_eq!(headers[0].0, "retry-after");
        assert!((1..=60).contains(&refused.quota.reset_seconds));
        assert!(headers.contains(&("ratelimit-policy", "2;w=60".into())));
        assert_eq!(limiter.refused()[0], ("tokens_per_ip", 1));
        // Another client has its own window.
        let other = actix_web::test::TestRequest::default()
            .peer_addr("192.0.2.2:4000".parse().unwrap())
            .to_http_request();
        assert!(limiter.token_issue(&other, &s).await.is_ok());
    }

    #[actix_web::test]
    async fn off_means_no_quota_and_sessions_count_apart() {
        let off = RateLimiter::new(&settings(0, 0), None).unwrap();
        let req = actix_web::test::TestRequest::default().to_http_request();
        let s = Id::parse("s1").unwrap();
        assert_eq!(off.token_issue(&req, &s).await.unwrap(), None);
        let sessions = RateLimiter::new(&settings(0, 1), None).unwrap();
        assert!(sessions.session_write(&s).await.is_ok());
        assert!(sessions.session_write(&s).await.is_err());
        assert!(sessions
            .session_write(&Id::parse("s2").unwrap())
            .await
            .is_ok());
    }
}
