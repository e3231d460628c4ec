//! Errors as the API server words them: a `Status` object with the HTTP code, so kubectl prints them
//! the way it prints the API server's own.

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

/// A JSON response with `code`.
pub fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A `Status` failure.
pub fn status(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> Response<Body> {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    json_response(code, &body)
}

/// 404 for an object the caller may not see, worded exactly as for one that does not exist, so
/// nothing leaks about other tenants.
pub fn not_found(group: &str, resource: &str, name: &str) -> Response<Body> {
    let what = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{what} \"{name}\" not found"),
        Some(json!({"name": name, "group": group, "kind": resource})),
    )
}

/// 401: no credentials, or credentials the API server does not accept.
pub fn unauthorized(message: &str) -> Response<Body> {
    status(StatusCode::UNAUTHORIZED, "Unauthorized", message, None)
}

/// 403 with the API server's wording.
pub fn forbidden(message: &str) -> Response<Body> {
    status(StatusCode::FORBIDDEN, "Forbidden", message, None)
}

/// 400.
pub fn bad_request(message: &str) -> Response<Body> {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

/// 502/503 when the API server cannot be reached or answered garbage.
pub fn upstream_failed(message: &str) -> Response<Body> {
    status(StatusCode::BAD_GATEWAY, "InternalError", message, None)
}

/// 429 TooManyRequests, with `Retry-After: 1` (clients such as kubectl wait and retry).
pub fn too_many_requests(message: &str) -> Response<Body> {
    let mut response = status(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        message,
        Some(serde_json::json!({"retryAfterSeconds": 1})),
    );
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    response
}

/// 503 when the caller cannot be authenticated because the API server is unavailable.
pub fn unavailable(message: &str) -> Response<Body> {
    status(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        message,
        None,
    )
}
