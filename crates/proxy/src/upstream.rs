//! The connection to the API server, with Bulkhead's own credentials: a pooled client for ordinary
//! requests (HTTP/1.1, or HTTP/2 when asked for), and an HTTP/1.1 pool for long-lived streams
//! (watches, followed logs) and upgrades (exec, attach, port-forward).
//!
//! Long-lived streams never share an HTTP/2 connection: the API server caps the streams of one
//! connection, and a few hundred open watches would make every other request queue behind them.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use serde_json::Value;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

type Upstream = BoxCloneSyncService<Request<Body>, Response<Incoming>, BoxError>;

/// How much of a response the proxy reads into memory when it must look inside it (filtered lists).
pub const MAX_FILTERED_BODY: usize = 256 * 1024 * 1024;

/// The API server, as Bulkhead.
#[derive(Clone)]
pub struct ApiServer {
    pooled: Upstream,
    streams: Upstream,
    sent: Option<prometheus::IntCounter>,
}

/// Why a request to the API server failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection or no response.
    #[error("the API server could not be reached: {0}")]
    Unreachable(String),
    /// An answer that is not what the API promises.
    #[error("the API server answered unexpectedly: {0}")]
    Malformed(String),
}

impl ApiServer {
    /// Builds both clients from the same configuration Bulkhead's own client uses; `http2`: ordinary
    /// requests offer HTTP/2 (ALPN) instead of HTTP/1.1.
    pub fn new(config: &kube::Config, http2: bool) -> Result<ApiServer, kube::Error> {
        Ok(ApiServer {
            pooled: Self::client(config, http2)?,
            streams: Self::client(config, false)?,
            sent: None,
        })
    }

    /// Counts every request sent upstream in `counter` (`bulkhead_proxy_upstream_requests_total`).
    pub fn counting(mut self, counter: prometheus::IntCounter) -> ApiServer {
        self.sent = Some(counter);
        self
    }

    fn client(config: &kube::Config, http2: bool) -> Result<Upstream, kube::Error> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(config.connect_timeout);
        let tls = config.rustls_client_config()?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if http2 {
            builder.enable_all_versions().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let client: HyperClient<_, Body> = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_keep_alive_interval(Some(Duration::from_secs(30)))
            .timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        let service = ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .option_layer(config.auth_layer()?)
            .layer(config.extra_headers_layer()?)
            .service(client.map_err(BoxError::from));
        Ok(BoxCloneSyncService::new(service.map_err(Into::<BoxError>::into)))
    }

    /// Sends a request (path and query only in its URI) and returns the streaming response. Watches
    /// and followed logs go over the HTTP/1.1 pool.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        let long_lived = request.uri().query().is_some_and(|q| {
            let query = crate::route::Query::parse(Some(q));
            ["watch", "follow"]
                .into_iter()
                .any(|key| query.get(key).is_some_and(crate::route::api_bool))
        });
        if long_lived {
            return self.send_upgrade(request).await;
        }
        if let Some(sent) = &self.sent {
            sent.inc();
        }
        self.pooled
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))
    }

    /// Sends a request over the HTTP/1.1 pool (upgrades, long-lived streams).
    pub async fn send_upgrade(&self, request: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        if let Some(sent) = &self.sent {
            sent.inc();
        }
        self.streams
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))
    }

    /// Sends a request and reads the whole answer (bounded), for requests the proxy must look into.
    pub async fn send_buffered(
        &self,
        request: Request<Body>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), UpstreamError> {
        let response = self.send(request).await?;
        let (parts, body) = response.into_parts();
        let limited = http_body_util::Limited::new(body, MAX_FILTERED_BODY);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?
            .to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }

    /// A JSON request as Bulkhead (TokenReview, SubjectAccessReview, object reads): the status and the
    /// decoded answer.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), UpstreamError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::ACCEPT, HeaderValue::from_static("application/json"));
        let body = match body {
            Some(b) => {
                request = request.header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let request = request
            .body(body)
            .map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        let (status, _, bytes) = self.send_buffered(request).await?;
        let value =
            serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Malformed(format!("{status}: {e}")))?;
        Ok((status, value))
    }
}
