//! CORS for the HTTP API from the same allow-list as the WebSocket `Origin`
//! check (`cors.allowed_origins`, see `origins`).
//!
//! A request from an allowed browser origin gets `Access-Control-Allow-*`
//! headers naming that origin (never `*`, so the answer is per origin and
//! `Vary: Origin`); a preflight is answered here, before routing. A request
//! whose `Origin` is not allowed is refused 403 `origin_forbidden` whatever
//! it asks — the same rule as for WebSockets — so a page elsewhere can
//! neither read answers nor cause writes (a "simple" cross-site POST skips
//! the preflight). Requests without `Origin` (servers, curl) and same-origin
//! ones (the console) are not affected.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};

use crate::error::ApiError;
use crate::origins::AllowedOrigins;

const ALLOW_METHODS: &str = "GET, HEAD, POST, PATCH, DELETE, OPTIONS";
const ALLOW_HEADERS: &str =
    "authorization, content-type, x-api-key, range, if-range, if-none-match";
/// What scripts may read besides the CORS-safelisted headers.
const EXPOSE_HEADERS: &str = "retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset, \
     ratelimit-policy, content-range, accept-ranges, etag, content-length, x-request-id";

/// The preflight cache lifetime (`cors.max_age_seconds`), as app data.
#[derive(Debug, Clone, Copy)]
pub struct PreflightMaxAge(pub u64);

/// Middleware: refuses disallowed origins, answers preflights, and adds
/// the CORS headers to answers for allowed ones.
pub async fn cors<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let origins = req.app_data::<web::Data<AllowedOrigins>>().cloned();
    let origin = req.headers().get(header::ORIGIN).cloned();
    let (Some(origins), Some(origin)) = (origins, origin) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    if !origins.admits(origin.to_str().ok(), req.headers()) {
        let res = ApiError::OriginForbidden.error_response();
        return Ok(req.into_response(res).map_into_right_body());
    }
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let max_age = req.app_data::<PreflightMaxAge>().map_or(600, |m| m.0);
        let mut res = HttpResponse::build(StatusCode::NO_CONTENT);
        res.insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, max_age.to_string()));
        let mut res = req.into_response(res.finish());
        allow(res.headers_mut(), origin);
        return Ok(res.map_into_right_body());
    }
    let mut res = next.call(req).await?;
    allow(res.headers_mut(), origin);
    res.headers_mut().insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    Ok(res.map_into_left_body())
}

fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    use actix_web::{test, App};

    use super::*;
    use crate::config::RunEnv;

    #[actix_web::test]
    async fn preflights_allowed_origins_and_refuses_others() {
        let origins = AllowedOrigins::new(&["https://app.example".into()], RunEnv::Production);
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(origins))
                .route("/x", web::post().to(HttpResponse::Ok))
                .wrap(from_fn(cors)),
        )
        .await;
        let preflight = test::TestRequest::default()
            .method(Method::OPTIONS)
            .uri("/x")
            .insert_header(("origin", "https://app.example"))
            .insert_header(("access-control-request-method", "POST"))
            .to_request();
        let res = test::call_service(&app, preflight).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let h = res.headers();
        assert_eq!(
            h.get("access-control-allow-origin").unwrap(),
            "https://app.example"
        );
        assert!(h
            .get("access-control-allow-headers")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("x-api-key"));
        assert_eq!(h.get("access-control-max-age").unwrap(), "600");

        let post = |origin: &'static str| {
            test::TestRequest::post()
                .uri("/x")
                .insert_header(("origin", origin))
                .insert_header(("host", "broker.internal:8080"))
                .to_request()
        };
        let res = test::call_service(&app, post("https://app.example")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers().get("vary").unwrap(), "Origin");
        let res = test::call_service(&app, post("https://evil.example")).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert!(res.headers().get("access-control-allow-origin").is_none());
        // Same origin as the broker itself (its console) is always allowed.
        let res = test::call_service(&app, post("http://broker.internal:8080")).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
}
