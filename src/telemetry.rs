//! Logging: the subscriber (JSON in production) and a span per request
//! carrying method, route, status, latency and a request id that is echoed
//! in `x-request-id`.

use std::io::IsTerminal as _;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::{field::Empty, Instrument};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings, RunEnv};
use crate::domain::Id;

/// Header carrying the request id in both directions.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init(settings: &LogSettings, run_env: RunEnv) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => run_env == RunEnv::Production,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// Middleware: one span per request, one log line when it finishes.
pub async fn trace_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // Accept a caller's id only if it is a plain id (no log injection).
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64)
        .and_then(|v| Id::parse(v).ok())
        .unwrap_or_else(Id::generate);
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let metrics = req.app_data::<crate::metrics::HttpMetrics>().cloned();
    let method = req.method().clone();
    let span = tracing::info_span!(
        "http_request",
        method = %req.method(),
        route = %route,
        request_id = %request_id,
        status = Empty,
        latency_ms = Empty,
    );
    let started = Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;
    let status = res.status().as_u16();
    span.record("status", status);
    span.record("latency_ms", started.elapsed().as_secs_f64() * 1000.0);
    if let Some(metrics) = metrics {
        metrics.observe(method.as_str(), &route, status, started.elapsed());
    }
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!("request failed");
        } else {
            tracing::info!("request finished");
        }
    });
    Ok(res)
}
