//! Requests forwarded to the API server: the caller's credentials and impersonation headers are
//! removed, hop-by-hop headers dropped, and the proxy says who the request is for.

use axum::body::Body;
use bulkhead_policy::Caller;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

/// Headers that describe one connection, not the request (RFC 9110 7.6.1), plus the caller's own
/// credentials and anything the caller says about whom to act as.
fn strip(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::HOST,
        header::AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    let impersonation: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("impersonate-"))
        .cloned()
        .collect();
    for name in impersonation {
        headers.remove(name);
    }
}

/// Turns a caller's request into one the proxy sends as `caller` (`None`: as Bulkhead itself).
pub fn outgoing(mut request: Request<Body>, caller: Option<&Caller>, path_and_query: &str) -> Request<Body> {
    let upgrade = request.headers().contains_key(header::UPGRADE);
    strip(request.headers_mut(), upgrade);
    if let Some(caller) = caller {
        let headers = request.headers_mut();
        // Raw UTF-8 bytes, as Go clients send them and the API server reads them; `auth::forwardable`
        // refused every name that would not arrive as it is.
        if let Ok(user) = HeaderValue::from_bytes(caller.user.as_bytes()) {
            headers.insert("impersonate-user", user);
        }
        for group in &caller.groups {
            if let Ok(group) = HeaderValue::from_bytes(group.as_bytes()) {
                headers.append("impersonate-group", group);
            }
        }
    }
    if let Ok(uri) = path_and_query.parse() {
        *request.uri_mut() = uri;
    }
    // The upstream leg chooses its own protocol version.
    *request.version_mut() = http::Version::HTTP_11;
    request
}

/// The API server's answer, streamed to the caller without its hop-by-hop headers.
pub fn incoming(response: Response<Incoming>) -> Response<Body> {
    incoming_with(response, Body::new)
}

/// [`incoming`], with the body wrapped by `body`.
pub fn incoming_with(response: Response<Incoming>, body: impl FnOnce(Incoming) -> Body) -> Response<Body> {
    let upgrade = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    let (mut parts, incoming) = response.into_parts();
    strip(&mut parts.headers, upgrade);
    Response::from_parts(parts, body(incoming))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_cannot_smuggle_credentials_or_identities_through() {
        let request = Request::get("https://proxy:9001/api/v1/pods?watch=1")
            .header("authorization", "Bearer alice-token")
            .header("impersonate-user", "admin")
            .header("impersonate-group", "system:masters")
            .header("impersonate-extra-scopes", "all")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "1")
            .header("accept", "application/json")
            .header("host", "proxy")
            .body(Body::empty())
            .unwrap();
        let alice = Caller::new("alice", ["solar-devs", "system:authenticated"]);
        let out = outgoing(request, Some(&alice), "/api/v1/namespaces/a/pods?watch=1");
        let h = out.headers();
        assert!(h.get("authorization").is_none());
        assert!(h.get("host").is_none());
        assert!(h.get("x-secret").is_none());
        assert!(h.get("connection").is_none());
        assert!(h.get("impersonate-extra-scopes").is_none());
        assert_eq!(h.get("impersonate-user").unwrap(), "alice");
        let groups: Vec<_> = h.get_all("impersonate-group").iter().collect();
        assert_eq!(groups, ["solar-devs", "system:authenticated"]);
        assert_eq!(h.get("accept").unwrap(), "application/json");
        assert_eq!(out.uri(), "/api/v1/namespaces/a/pods?watch=1");

        let upgrade = Request::post("/api/v1/namespaces/a/pods/p/exec")
            .header("connection", "Upgrade")
            .header("upgrade", "SPDY/3.1")
            .header("impersonate-user", "admin")
            .body(Body::empty())
            .unwrap();
        let out = outgoing(upgrade, None, "/api/v1/namespaces/a/pods/p/exec");
        assert_eq!(out.headers().get("upgrade").unwrap(), "SPDY/3.1");
        assert_eq!(out.headers().get("connection").unwrap(), "Upgrade");
        assert!(out.headers().get("impersonate-user").is_none());
    }
}
