//! The console's operations, one `GET` per file of `crate::console::ASSETS`
//! (the table `routes::console` mounts), so a file added to the console is
//! documented by being added there. Their error codes are in
//! `operations::ERRORS` like every operation's.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, OperationBuilder};
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::{ContentBuilder, Response, ResponseBuilder};
use utoipa::Modify;

use crate::console::{Asset, ASSETS};

/// Adds the console's operations (`console_<name>`).
pub(super) struct ConsoleFiles;

impl Modify for ConsoleFiles {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for asset in &ASSETS {
            doc.paths
                .add_path_operation(asset.path, vec![HttpMethod::Get], operation(asset));
        }
    }
}

fn operation(asset: &Asset) -> Operation {
    let description = "The web console (SPEC section 11), embedded in the binary; every \
        answer carries a Content-Security-Policy allowing only this origin, \
        `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`. 404 \
        `not_found` while `console.enabled` is off (production's default).";
    let not_modified = ResponseBuilder::new()
        .description("Not Modified (If-None-Match)")
        .build();
    OperationBuilder::new()
        .tag("console")
        .operation_id(Some(format!("console_{}", asset.name)))
        .summary(Some(format!(
            "The console's {} file ({})",
            asset.name, asset.content_type
        )))
        .description(Some(description))
        .response("200", served(asset))
        .response("304", not_modified)
        .build()
}

fn served(asset: &Asset) -> Response {
    let content = ContentBuilder::new()
        .schema(Some(Object::with_type(Type::String)))
        .build();
    let header = |description: &str| {
        HeaderBuilder::new()
            .schema(Some(Object::with_type(Type::String)))
            .description(Some(description))
            .build()
    };
    ResponseBuilder::new()
        .description(format!("the console's {} file", asset.name))
        .content(asset.content_type, content)
        .header("ETag", header("a digest of the file"))
        .header(
            "Cache-Control",
            header("`no-cache`: revalidate with the ETag"),
        )
        .header("Content-Security-Policy", header(crate::console::CSP))
        .build()
}
