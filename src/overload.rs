//! Load shedding: a bound on the requests the whole instance works on at
//! once (`server.max_inflight_requests`).
//!
//! One connection has at most one request in a handler and, with the
//! patched actix-http in `vendor/` (see its `PATCHED.md`), at most 16
//! decoded requests queued behind it: a pipelining client is slowed down
//! by TCP rather than buffered. What is left unbounded is the number of
//! connections with a request in a handler, e.g. thousands of clients all
//! waiting for a slow Redis. Past the limit a request is answered at once
//! (or after `server.overload_wait_ms`) with 503 `overloaded` and
//! `Retry-After` instead of joining the wait.
//!
//! Health endpoints are exempt: a busy instance must still say it is alive.
//! Shed requests skip the request span and log line (this middleware wraps
//! the tracing one); they are counted, with at most one warning per
//! `WARN_EVERY`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::ResponseError as _;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::ApiError;

/// Paths that are never shed.
pub(crate) const EXEMPT: &[&str] = &["/health/live", "/health/ready", "/api/health"];

/// Shortest interval between two "overloaded" warnings.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The instance-wide limit, shared by every worker (registered as app data).
#[derive(Clone)]
pub struct InflightLimit {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None`: unbounded.
    permits: Option<Semaphore>,
    max: usize,
    wait: Duration,
    started: Instant,
    shed: AtomicU64,
    /// Milliseconds since `started` of the last warning, plus one (0: none yet).
    warned_at_ms: AtomicU64,
    shed_at_warning: AtomicU64,
}

/// Every permit is taken (after the bounded wait).
struct Full;

impl InflightLimit {
    /// At most `max` requests in flight (0 = unbounded); a request that
    /// finds none free waits up to `wait` for one.
    pub fn new(max: usize, wait: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                permits: (max > 0).then(|| Semaphore::new(max)),
                max,
                wait,
                started: Instant::now(),
                shed: AtomicU64::new(0),
                warned_at_ms: AtomicU64::new(0),
                shed_at_warning: AtomicU64::new(0),
            }),
        }
    }

    /// Requests answered with 503 `overloaded` since start.
    pub fn shed_total(&self) -> u64 {
        self.inner.shed.load(Ordering::Relaxed)
    }

    /// A permit to hold while the request runs (`None`: no limit set).
    async fn admit(&self) -> Result<Option<SemaphorePermit<'_>>, Full> {
        let Some(permits) = &self.inner.permits else {
            return Ok(None);
        };
        if let Ok(permit) = permits.try_acquire() {
            return Ok(Some(permit));
        }
        if self.inner.wait.is_zero() {
            return Err(Full);
        }
        match tokio::time::timeout(self.inner.wait, permits.acquire()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(Full),
        }
    }

    fn count_shed(&self) {
        let inner = &self.inner;
        let total = inner.shed.fetch_add(1, Ordering::Relaxed) + 1;
        let now_ms = inner.started.elapsed().as_millis() as u64 + 1;
        let last = inner.warned_at_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && inner
                .warned_at_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let before = inner.shed_at_warning.swap(total, Ordering::Relaxed);
            tracing::warn!(
                max_inflight_requests = inner.max,
                shed_since_last_warning = total - before,
                shed_total = total,
                "overloaded: answering requests with 503 overloaded"
            );
        }
    }
}

/// Middleware: runs a request if a permit is free (health endpoints
/// always), otherwise answers 503 `overloaded` with `Retry-After`.
pub async fn shed_overload(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limit = req.app_data::<InflightLimit>().cloned();
    let Some(limit) = limit.filter(|_| !EXEMPT.contains(&req.path())) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let Ok(permit) = limit.admit().await else {
        limit.count_shed();
        let detail = format!(
            "the broker is at its limit of {} requests in flight; retry later",
            limit.inner.max
        );
        let res = ApiError::Overloaded(detail).error_response();
        return Ok(req.into_response(res).map_into_right_body());
    };
    let res = next.call(req).await;
    drop(permit);
    res.map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::middleware::from_fn;
    use actix_web::{test, web, App, HttpResponse};

    async fn slow() -> HttpResponse {
        tokio::time::sleep(Duration::from_millis(200)).await;
        HttpResponse::Ok().finish()
    }

    #[actix_web::test]
    async fn past_the_limit_answers_503_overloaded_but_health_still_answers() {
        let limit = InflightLimit::new(1, Duration::ZERO);
        let app = test::init_service(
            App::new()
                .app_data(limit.clone())
                .route("/slow", web::get().to(slow))
                .route("/health/live", web::get().to(slow))
                .wrap(from_fn(shed_overload)),
        )
        .await;
        let first = test::call_service(&app, test::TestRequest::get().uri("/slow").to_request());
        let second = async {
            // Let the first request take the only permit.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let shed =
                test::call_service(&app, test::TestRequest::get().uri("/slow").to_request()).await;
            let health = test::call_service(
                &app,
                test::TestRequest::get().uri("/health/live").to_request(),
            )
            .await;
            (shed, health)
        };
        let (first, (shed, health)) = tokio::join!(first, second);
        assert_eq!(first.status(), 200);
        assert_eq!(health.status(), 200);
        assert_eq!(shed.status(), 503);
        assert_eq!(shed.headers().get("retry-after").unwrap(), "1");
        let body: serde_json::Value = test::read_body_json(shed).await;
        assert_eq!(body["error"], "overloaded", "{body}");
        assert!(body["detail"].as_str().unwrap().contains("limit of 1"));
        assert_eq!(limit.shed_total(), 1);

        // The permit is back: the next request runs.
        let again =
            test::call_service(&app, test::TestRequest::get().uri("/slow").to_request()).await;
        assert_eq!(again.status(), 200);
    }

    #[actix_web::test]
    async fn a_short_wait_admits_a_request_when_a_permit_frees_up() {
        let limit = InflightLimit::new(1, Duration::from_millis(1000));
        let app = test::init_service(
            App::new()
                .app_data(limit.clone())
                .route("/slow", web::get().to(slow))
                .wrap(from_fn(shed_overload)),
        )
        .await;
        let a = test::call_service(&app, test::TestRequest::get().uri("/slow").to_request());
        let b = test::call_service(&app, test::TestRequest::get().uri("/slow").to_request());
        let (a, b) = tokio::join!(a, b);
        assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
        assert_eq!(limit.shed_total(), 0);
    }
}
