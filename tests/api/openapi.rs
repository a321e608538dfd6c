//! The OpenAPI document served at `GET /api/openapi.json`, against the
//! app serving it: a valid document, the same routes as the route table
//! mounts (both ways), every operation really routed, and the error enum
//! equal to `error::ERROR_CODES`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{spawn_app_with, Backend, TestApp};

/// What scripts/validate-deploy.sh (run by scripts/test.sh before the
/// tests) installs into its venv; `OPENAPI_SPEC_VALIDATOR` overrides it.
const VALIDATOR: &str = "target/deploy-tools/venv/bin/openapi-spec-validator";

/// The methods an OpenAPI path item can hold.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// An app signing with Ed25519, so that the JWKS is served (with HS256 it
/// answers 404 `not_found`, as an unrouted path would), and its document.
async fn app_and_document() -> (TestApp, Value, tempfile::TempDir) {
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey};
    let dir = tempfile::tempdir().expect("temp dir");
    let key = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]);
    let pem = key.to_pkcs8_pem(LineEnding::LF).expect("PEM");
    let private = dir.path().join("signing.pem");
    std::fs::write(&private, pem.as_bytes()).expect("write key");
    let key_path = private.to_str().expect("UTF-8 path");
    let app = spawn_app_with(
        Backend::Memory,
        &[("BROKER__TOKENS__PRIVATE_KEY_PATH", key_path)],
    )
    .await;
    let (status, document) = request(&app, Method::GET, "/api/openapi.json").await;
    assert_eq!(status, 200, "{document}");
    (app, document, dir)
}

/// Status and JSON body (Null when empty or not JSON, e.g. `/metrics`).
async fn request(app: &TestApp, method: Method, path: &str) -> (u16, Value) {
    let response = app
        .client
        .request(method, app.url(path))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Every `(METHOD, path template)` the document describes.
fn documented(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("paths object");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

fn served() -> BTreeSet<(String, String)> {
    rtc_broker::routes::served_routes()
        .into_iter()
        .map(|(method, path)| (method.as_str().to_string(), path))
        .collect()
}

/// `template` with every `{param}` replaced by `value`.
fn fill(template: &str, value: &str) -> String {
    let mut path = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        path.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |i| open + i + 1);
        path.push_str(value);
        rest = &rest[close..];
    }
    path.push_str(rest);
    path
}

#[tokio::test]
async fn the_document_is_valid_openapi() {
    let (_app, document, dir) = app_and_document().await;
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, document.to_string()).expect("write document");
    let validator = std::env::var_os("OPENAPI_SPEC_VALIDATOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(VALIDATOR));
    assert!(
        validator.is_file(),
        "{} is missing: run scripts/validate-deploy.sh (scripts/test.sh does), which installs \
         openapi-spec-validator into target/deploy-tools/venv, or set OPENAPI_SPEC_VALIDATOR",
        validator.display()
    );
    let output = std::process::Command::new(&validator)
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_document_describes_exactly_the_served_routes() {
    let (_app, document, _dir) = app_and_document().await;
    let (documented, served) = (documented(&document), served());
    let show = |set: BTreeSet<&(String, String)>| {
        set.iter()
            .map(|(m, p)| format!("\n  {m} {p}"))
            .collect::<String>()
    };
    assert!(
        documented == served,
        "documented but not served:{}\nserved but not documented:{}",
        show(documented.difference(&served).collect()),
        show(served.difference(&documented).collect())
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let (app, document, _dir) = app_and_document().await;
    for (method, template) in documented(&document) {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let path = fill(&template, "openapi-probe");
        let (status, body) = request(&app, method.clone(), &path).await;
        let unrouted = status == 405 || (status == 404 && body["error"] == "not_found");
        assert!(!unrouted, "{method} {path}: {status} {body}");
        if method == Method::HEAD {
            // No body tells a handler's 404 from the fallback's: an invalid
            // id is answered 400 by the handler only.
            let path = fill(&template, "bad..id");
            let (status, _) = request(&app, method.clone(), &path).await;
            assert_eq!(status, 400, "{method} {path} is not routed to its handler");
        }
    }
}

/// The CORS layer stands in front of every route: each documented
/// operation refuses a foreign `Origin` with 403 `origin_forbidden`, and
/// its document says so.
#[tokio::test]
async fn every_operation_documents_and_answers_origin_forbidden() {
    let app = spawn_app_with(
        Backend::Memory,
        &[("BROKER__CORS__ALLOWED_ORIGINS", "https://app.example.com")],
    )
    .await;
    let (_, document) = request(&app, Method::GET, "/api/openapi.json").await;
    for (method, template) in documented(&document) {
        let described = document["paths"][&template][method.to_lowercase()]["responses"]["403"]
            ["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            described.contains("`origin_forbidden`"),
            "{method} {template} does not document origin_forbidden"
        );
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let path = fill(&template, "openapi-probe");
        let response = app
            .client
            .request(method.clone(), app.url(&path))
            .header("origin", "https://elsewhere.example")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 403, "{method} {path}");
        if method != Method::HEAD {
            let body: Value = response.json().await.expect("JSON body");
            assert_eq!(body["error"], "origin_forbidden", "{method} {path}");
        }
    }
}

#[tokio::test]
async fn the_error_enum_is_error_codes() {
    let (_app, document, _dir) = app_and_document().await;
    let schemas = &document["components"]["schemas"];
    let error = &schemas["Error"]["properties"]["error"];
    let code = match error["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap_or_default();
            &schemas[name]
        }
        None => error,
    };
    let documented: BTreeSet<&str> = code["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("no enum of codes in {error}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let listed: BTreeSet<&str> = rtc_broker::error::ERROR_CODES
        .iter()
        .map(|(code, _)| *code)
        .collect();
    assert_eq!(documented, listed);
}

/// Whether `value` fits `schema` as far as the document describes it:
/// types, enums, required properties, and no property it does not name
/// (unless the schema is a free-form map). `$ref`s resolve in `document`.
fn conforms(document: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or_default();
        return conforms(document, &document["components"]["schemas"][name], value);
    }
    if let Some(alternatives) = schema["oneOf"].as_array() {
        let errors: Vec<String> = alternatives
            .iter()
            .filter_map(|s| conforms(document, s, value).err())
            .collect();
        if errors.len() < alternatives.len() {
            return Ok(());
        }
        return Err(format!("{value} fits no alternative: {errors:?}"));
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            return Err(format!("{value} is not one of {allowed:?}"));
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()), // any value
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let fits = types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
    if !fits {
        return Err(format!("{value} is not of type {types:?}"));
    }
    match value {
        Value::Array(items) => items
            .iter()
            .try_for_each(|item| conforms(document, &schema["items"], item)),
        Value::Object(fields) => object_conforms(document, schema, fields),
        _ => Ok(()),
    }
}

fn object_conforms(
    document: &Value,
    schema: &Value,
    fields: &serde_json::Map<String, Value>,
) -> Result<(), String> {
    let required = schema["required"].as_array().cloned().unwrap_or_default();
    if let Some(missing) = required
        .iter()
        .filter_map(Value::as_str)
        .find(|r| !fields.contains_key(*r))
    {
        return Err(format!("required `{missing}` missing"));
    }
    let free_form = !schema["additionalProperties"].is_null();
    for (name, field) in fields {
        match schema["properties"].get(name) {
            Some(property) => {
                conforms(document, property, field).map_err(|e| format!("{name}: {e}"))?
            }
            None if free_form => {}
            None => return Err(format!("`{name}` is not documented")),
        }
    }
    Ok(())
}

/// One call: its answer must be documented for the operation (`template`)
/// with that status, and fit its schema; an error's code must be named in
/// that response. Returns the body.
async fn check(
    app: &TestApp,
    document: &Value,
    (method, template, path): (Method, &str, &str),
    body: Option<Value>,
) -> Value {
    let (status, answer) = app.send(method.clone(), path, body.as_ref()).await;
    let operation = &document["paths"][template][method.as_str().to_lowercase()];
    let response = &operation["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path}: {status} is not documented: {answer}"
    );
    if let Some(code) = answer["error"].as_str().filter(|_| status >= 400) {
        let listed = response["description"].as_str().unwrap_or_default();
        assert!(
            listed.contains(&format!("`{code}`")),
            "{method} {path}: {code} not in {listed}"
        );
    }
    let schema = &response["content"]["application/json"]["schema"];
    if schema.is_null() {
        assert!(
            answer.is_null(),
            "{method} {path}: undocumented body {answer}"
        );
    } else if let Err(e) = conforms(document, schema, &answer) {
        panic!("{method} {path}: {status} {answer}: {e}");
    }
    answer
}

#[tokio::test]
async fn served_bodies_match_the_documented_schemas() {
    use serde_json::json;
    use Method as M;
    let (app, doc, _dir) = app_and_document().await;
    let doc = &doc;
    for path in [
        "/api/health",
        "/health/live",
        "/health/ready",
        "/api/storage/status",
    ] {
        check(&app, doc, (M::GET, path, path), None).await;
    }
    check(
        &app,
        doc,
        (M::GET, "/.well-known/jwks.json", "/.well-known/jwks.json"),
        None,
    )
    .await;
    let issue = (M::POST, "/api/voice/token", "/api/voice/token");
    check(&app, doc, issue.clone(), Some(json!({}))).await;
    let issued = check(&app, doc, issue, Some(json!({"session_id": "doc-s"}))).await;
    let verify = (M::POST, "/api/tokens/verify", "/api/tokens/verify");
    check(
        &app,
        doc,
        verify,
        Some(json!({"token": issued["rtc_token"]})),
    )
    .await;
    let token = (
        M::GET,
        "/api/voice/token/{session_id}",
        "/api/voice/token/doc-s",
    );
    check(&app, doc, token.clone(), None).await;
    let revoke = (
        M::DELETE,
        "/api/voice/token/{session_id}",
        "/api/voice/token/doc-s",
    );
    check(&app, doc, revoke, None).await;
    check(&app, doc, token, None).await; // 412 no_rtc_token

    let create = (M::POST, "/api/sessions", "/api/sessions");
    let session = json!({"session_id": "doc-s", "metadata": {"a": 1}});
    check(&app, doc, create.clone(), Some(session.clone())).await;
    check(&app, doc, create, Some(session)).await; // 409 session_exists
    let record = (M::PATCH, "/api/sessions/{id}", "/api/sessions/doc-s");
    check(&app, doc, record, Some(json!({"metadata": {"b": 2}}))).await;
    let members = (
        M::POST,
        "/api/sessions/{id}/members",
        "/api/sessions/doc-s/members",
    );
    check(
        &app,
        doc,
        members,
        Some(json!({"member_id": "m1", "role": "host"})),
    )
    .await;
    let member = "/api/sessions/{id}/members/{member_id}";
    check(
        &app,
        doc,
        (M::DELETE, member, "/api/sessions/doc-s/members/m1"),
        None,
    )
    .await;
    let end = (M::POST, "/api/sessions/{id}/end", "/api/sessions/doc-s/end");
    check(&app, doc, end, None).await;
    check(
        &app,
        doc,
        (M::GET, "/api/sessions/{id}", "/api/sessions/doc-s"),
        None,
    )
    .await;

    let publish = (M::POST, "/api/rooms/{room}/publish", "/api/rooms/r/publish");
    check(&app, doc, publish, Some(json!({"data": {"x": 1}}))).await;
    let room = (M::GET, "/api/rooms/{room}/members", "/api/rooms/r/members");
    check(&app, doc, room, None).await;

    let start = (M::POST, "/api/recordings", "/api/recordings");
    let started = check(&app, doc, start, Some(json!({"session_id": "doc-s"}))).await;
    let id = started["record_id"].as_str().expect("record_id");
    let stop = format!("/api/recordings/{id}/stop");
    check(
        &app,
        doc,
        (M::POST, "/api/recordings/{id}/stop", &stop),
        None,
    )
    .await;
    let status = format!("/api/recordings/{id}/status");
    check(
        &app,
        doc,
        (M::GET, "/api/recordings/{id}/status", &status),
        None,
    )
    .await;
}
