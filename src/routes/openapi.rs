//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the whole HTTP API
//! (SPEC section 9), generated with utoipa from the code rather than
//! written by hand, so that it cannot drift from what is served:
//!
//! - `operations` documents one operation per mounted route, and the tests
//!   (`tests/api/openapi.rs`) compare them with `routes::served_routes`,
//!   the list the route table mounts, both ways;
//! - request and response bodies are schemas in `schemas`, or the wire
//!   types themselves where handlers serialize those (`ToSchema` derives);
//! - the console's files are documented from `console::ASSETS`, the table
//!   their routes are mounted from (`console`);
//! - the error responses of each operation are written here from
//!   `operations::ERRORS` (codes) and `error::ERROR_CODES` (each code's
//!   status, and the `error` enum of the `Error` schema), so codes and
//!   statuses are kept in one place.
//!
//! The document is built once, on first request.

mod console;
mod operations;
mod schemas;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use actix_web::http::{Method, StatusCode};
use actix_web::HttpResponse;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::RouteTable;
use crate::error::ERROR_CODES;
use console::ConsoleFiles;

#[derive(OpenApi)]
#[openapi(
    info(description = "Short-lived RTC tokens, sessions, WebSocket rooms and recordings \
        (SPEC sections 3-9). Every error is JSON `{\"error\": <code>, \"detail\": <text>}` \
        (schema `Error`); any path answers 404 `not_found` when no route matches and 405 \
        `method_not_allowed` for another method, and every call but the health checks may \
        answer 503 `overloaded` with `Retry-After`. A browser request whose `Origin` is not in \
        `cors.allowed_origins` (and not the broker's own) gets 403 `origin_forbidden` on any \
        call. Before any route, the HTTP layer answers 400 `invalid_request` for a request it \
        cannot parse, 431 `headers_too_large` for a head over 128 KiB or 96 headers, and 408 \
        `request_timeout` for a head that does not arrive in time. Calls listing the API key \
        schemes need one when any is configured (`auth.api_keys`); without keys they are open."),
    paths(
        operations::health, operations::live, operations::ready, operations::storage_status,
        operations::metrics, operations::openapi,
        operations::issue_token, operations::fetch_token, operations::revoke_session_token,
        operations::verify_token, operations::revoke_token, operations::jwks,
        operations::create_session, operations::get_session, operations::patch_session,
        operations::add_member, operations::remove_member, operations::end_session,
        operations::room_socket, operations::publish, operations::room_members,
        operations::kick_member,
        operations::start_recording, operations::upload_chunk, operations::stop_recording,
        operations::recording_status, operations::recording_socket,
        operations::download, operations::download_head,
    ),
    components(schemas(schemas::ErrorBody)),
    modifiers(&SecuritySchemes, &ConsoleFiles, &ErrorResponses),
    tags(
        (name = "operations", description = "Health, storage status, metrics (SPEC section 8)"),
        (name = "tokens", description = "RTC tokens (SPEC section 4)"),
        (name = "sessions", description = "Session records (SPEC section 5)"),
        (name = "rooms", description = "WebSocket rooms (SPEC section 6)"),
        (name = "recordings", description = "Recordings (SPEC section 7)"),
        (name = "console", description = "The web console (SPEC section 11)"),
    )
)]
struct ApiDoc;

static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

pub(super) fn configure(t: &mut RouteTable) {
    t.at("/api/openapi.json").route(Method::GET, serve);
}

async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(&*DOCUMENT)
}

/// The API key, as `Authorization: Bearer` or `X-API-Key`.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "An API key; where an operation says so, an RTC token or a recording's \
                 upload token instead",
            ))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        let header = ApiKeyValue::with_description("X-API-Key", "An API key");
        components.add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(header)));
    }
}

/// A response header: name, type, meaning.
type HeaderDoc = (&'static str, Type, &'static str);

const RETRY_AFTER: HeaderDoc = ("Retry-After", Type::Integer, "seconds");
const RATE_LIMIT: &[HeaderDoc] = &[
    ("RateLimit-Limit", Type::Integer, "requests per window"),
    (
        "RateLimit-Remaining",
        Type::Integer,
        "requests left in this window",
    ),
    (
        "RateLimit-Reset",
        Type::Integer,
        "seconds until the window ends",
    ),
    (
        "RateLimit-Policy",
        Type::String,
        "`<limit>;w=<window seconds>`",
    ),
];

fn error_headers(status: StatusCode) -> Vec<HeaderDoc> {
    match status {
        StatusCode::TOO_MANY_REQUESTS => [&[RETRY_AFTER], RATE_LIMIT].concat(),
        StatusCode::SERVICE_UNAVAILABLE => vec![RETRY_AFTER],
        StatusCode::RANGE_NOT_SATISFIABLE => {
            vec![("Content-Range", Type::String, "`bytes */<size>`")]
        }
        _ => vec![],
    }
}

/// Writes each operation's error responses (and what follows from its
/// codes: the API key schemes, the `RateLimit-*` headers on success).
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let shed = !crate::overload::EXEMPT.contains(&path.as_str());
            for op in operations_mut(item) {
                let mut codes = op.operation_id.as_deref().map(codes_of).unwrap_or_default();
                if shed {
                    codes.push("overloaded");
                }
                // The CORS layer's refusal, in front of every route.
                codes.push("origin_forbidden");
                document_codes(op, &codes);
            }
        }
    }
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// The codes `operations::ERRORS` gives an operation.
fn codes_of(operation_id: &str) -> Vec<&'static str> {
    operations::ERRORS
        .iter()
        .filter(|(id, _)| *id == operation_id)
        .flat_map(|(_, groups)| groups.iter().copied().flatten().copied())
        .collect()
}

fn status_of(code: &str) -> Option<StatusCode> {
    ERROR_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, s)| *s)
}

fn document_codes(op: &mut Operation, codes: &[&'static str]) {
    let mut by_status: BTreeMap<StatusCode, Vec<&str>> = BTreeMap::new();
    for code in codes {
        if let Some(status) = status_of(code) {
            by_status.entry(status).or_default().push(code);
        }
    }
    for (status, codes) in &by_status {
        let response = error_response(*status, codes);
        op.responses
            .responses
            .insert(status.as_str().to_string(), response.into());
    }
    follow_codes(op, codes);
}

/// `unauthorized`: the API key schemes; `rate_limited`: the quota headers
/// on success.
fn follow_codes(op: &mut Operation, codes: &[&str]) {
    if codes.contains(&"unauthorized") {
        let scheme = |name: &str| SecurityRequirement::new(name, Vec::<String>::new());
        op.security = Some(vec![scheme("bearer"), scheme("api_key")]);
    }
    if codes.contains(&"rate_limited") {
        let successes = op.responses.responses.iter_mut();
        for (_, response) in successes.filter(|(status, _)| status.starts_with('2')) {
            if let RefOr::T(response) = response {
                add_headers(response, RATE_LIMIT);
            }
        }
    }
}

fn error_response(status: StatusCode, codes: &[&str]) -> Response {
    let listed: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
    let reason = status.canonical_reason().unwrap_or("Error");
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Error")))
        .build();
    let mut response = ResponseBuilder::new()
        .description(format!("{reason}: {}", listed.join(", ")))
        .content("application/json", content)
        .build();
    add_headers(&mut response, &error_headers(status));
    response
}

fn add_headers(response: &mut Response, headers: &[HeaderDoc]) {
    for (name, schema_type, description) in headers {
        let header = HeaderBuilder::new()
            .schema(Some(Object::with_type(schema_type.clone())))
            .description(Some(*description))
            .build();
        response.headers.insert(name.to_string(), header.into());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn documented_ids() -> BTreeSet<String> {
        let mut doc = ApiDoc::openapi();
        let items = doc.paths.paths.values_mut();
        items
            .flat_map(|item| operations_mut(item).map(|op| op.operation_id.clone()))
            .map(|id| id.unwrap_or_default())
            .collect()
    }

    #[test]
    fn every_operation_has_its_error_codes_and_no_other_entry_exists() {
        let listed: BTreeSet<String> = operations::ERRORS
            .iter()
            .map(|(id, _)| id.to_string())
            .collect();
        assert_eq!(listed.len(), operations::ERRORS.len(), "an operation twice");
        assert_eq!(documented_ids(), listed);
    }

    #[test]
    fn every_code_named_for_an_operation_is_a_contract_code() {
        let unknown: Vec<&str> = operations::ERRORS
            .iter()
            .flat_map(|(id, _)| codes_of(id))
            .filter(|code| status_of(code).is_none())
            .collect();
        assert!(unknown.is_empty(), "not in ERROR_CODES: {unknown:?}");
    }

    #[test]
    fn management_calls_list_both_api_key_schemes() {
        let doc = ApiDoc::openapi();
        let item = &doc.paths.paths["/api/voice/token"];
        let security = item.post.as_ref().and_then(|op| op.security.clone());
        let json = serde_json::to_value(security).unwrap_or_default();
        assert_eq!(json, serde_json::json!([{"bearer": []}, {"api_key": []}]));
    }
}
