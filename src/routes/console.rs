//! The console's routes (`crate::console`): `GET /` and its assets, each
//! with the console's security headers and `cache-control: no-cache` (a
//! browser revalidates with the ETag, so a new binary's console is seen at
//! once), or 404 `not_found` when `console.enabled` is off.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, ResponseError};

use super::RouteTable;
use crate::console::{Asset, Console, ASSETS, CSP};
use crate::error::ApiError;

pub(super) fn configure(t: &mut RouteTable) {
    for asset in &ASSETS {
        t.at(asset.path)
            .route(Method::GET, move |req: HttpRequest| serve(req, asset));
    }
}

async fn serve(req: HttpRequest, asset: &'static Asset) -> HttpResponse {
    let enabled = req.app_data::<Console>().is_some_and(|c| c.enabled);
    let mut response = if !enabled {
        ApiError::NotFound.error_response()
    } else if not_modified(&req, asset.etag()) {
        HttpResponse::NotModified()
            .insert_header((header::ETAG, asset.etag()))
            .finish()
    } else {
        HttpResponse::Ok()
            .content_type(asset.content_type)
            .insert_header((header::ETAG, asset.etag()))
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .body(asset.body)
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `If-None-Match` names the current ETag (or is `*`).
fn not_modified(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}
