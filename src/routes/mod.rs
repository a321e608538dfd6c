//! HTTP routes, one module per resource. `configure` mounts them all; the
//! JSON 404/405 answers for unknown routes and methods live here too.
//!
//! Each module's `configure` adds its routes to a `RouteTable`, which
//! both mounts them into actix and lists them (`served_routes`), so the
//! list of what is served cannot drift from what is mounted; the OpenAPI
//! tests compare that list with the document (`openapi`).

mod console;
mod health;
mod metrics;
mod openapi;
mod recordings;
mod rooms;
mod sessions;
mod tokens;

pub use rooms::RoomTokens;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers, Next};
use actix_web::{web, FromRequest, Handler, Responder, ResponseError, Route};

use crate::error::ApiError;

/// Mounts every route of the broker.
pub fn configure(cfg: &mut web::ServiceConfig) {
    all_routes().mount(cfg);
}

/// Every `(method, path template)` the broker serves, from the same table
/// `configure` mounts, in registration order.
pub fn served_routes() -> Vec<(Method, String)> {
    all_routes().list()
}

fn all_routes() -> RouteTable {
    let mut table = RouteTable::default();
    health::configure(&mut table);
    metrics::configure(&mut table);
    tokens::configure(&mut table);
    sessions::configure(&mut table);
    rooms::configure(&mut table);
    recordings::configure(&mut table);
    openapi::configure(&mut table);
    console::configure(&mut table);
    table
}

/// The routes of the broker by path template, each method with its handler.
#[derive(Default)]
struct RouteTable {
    resources: Vec<(&'static str, Vec<(Method, Route)>)>,
}

impl RouteTable {
    /// The resource at `path` (one per path, however often it is named);
    /// add its methods with `Methods::route`.
    fn at(&mut self, path: &'static str) -> Methods<'_> {
        let index = match self.resources.iter().position(|(p, _)| *p == path) {
            Some(index) => index,
            None => {
                self.resources.push((path, Vec::new()));
                self.resources.len() - 1
            }
        };
        Methods(&mut self.resources[index].1)
    }

    fn mount(self, cfg: &mut web::ServiceConfig) {
        for (path, routes) in self.resources {
            let resource = routes
                .into_iter()
                .fold(web::resource(path), |resource, (_, route)| {
                    resource.route(route)
                });
            cfg.service(resource);
        }
    }

    fn list(&self) -> Vec<(Method, String)> {
        self.resources
            .iter()
            .flat_map(|(path, routes)| routes.iter().map(|(m, _)| (m.clone(), path.to_string())))
            .collect()
    }
}

/// The methods of one resource.
struct Methods<'a>(&'a mut Vec<(Method, Route)>);

impl Methods<'_> {
    /// Serves `method` on this resource with `handler`.
    fn route<F, Args>(self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.0
            .push((method.clone(), web::method(method).to(handler)));
        self
    }
}

/// Middleware: a WebSocket upgrade is answered 400 `invalid_request` at
/// once anywhere but the `/ws/` routes. actix reads the body of such a
/// request as the upgraded stream, to the end of the connection whatever
/// its `content-length`, so a JSON route would otherwise wait for the body
/// timeout (and a chunk upload for the upload timeout).
pub async fn refuse_stray_upgrade<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let websocket = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    if websocket && !req.path().starts_with("/ws/") {
        let res =
            ApiError::InvalidRequest("only the /ws/ routes accept a WebSocket upgrade".into())
                .error_response();
        return Ok(req.into_response(res).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// The app-wide fallback for paths no route matches.
pub async fn not_found() -> actix_web::HttpResponse {
    ApiError::NotFound.error_response()
}

/// Rewrites actix's empty 405 (a known path, another method) into the
/// contract's JSON error.
pub fn json_method_not_allowed<B: 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().handler(StatusCode::METHOD_NOT_ALLOWED, |res: ServiceResponse<B>| {
        let (req, _) = res.into_parts();
        let res = ApiError::MethodNotAllowed.error_response();
        Ok(ErrorHandlerResponse::Response(
            ServiceResponse::new(req, res).map_into_right_body(),
        ))
    })
}

/// Parses a path segment into an id, or `invalid_id` naming the segment.
fn path_id(field: &'static str, raw: &str) -> Result<crate::domain::Id, ApiError> {
    crate::domain::Id::parse(raw).map_err(ApiError::invalid_id(field))
}

/// Parses the query string of a request (400 `invalid_request` when it
/// does not fit `T`).
fn query<T: serde::de::DeserializeOwned>(req: &actix_web::HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::InvalidRequest(format!("bad query string: {e}")))
}

/// Checks a free-text field: 1..=max characters, no control characters.
fn text_field(field: &str, value: String, max: usize) -> Result<String, ApiError> {
    let len = value.chars().count();
    if len == 0 || len > max || value.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(format!(
            "{field} must be 1 to {max} characters without control characters"
        )));
    }
    Ok(value)
}
