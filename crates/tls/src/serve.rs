//! The accept loop every role serves through, with the limits that keep a slow or hostile client from
//! tying a role up: a handshake deadline, a header deadline, an idle deadline, a connection limit, a
//! header size limit and a body limit (and deadline).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// A request's body as the roles see it: at most [`Limits::max_body_bytes`], and all of it within
/// [`Limits::body_read`] of the request's start; past either, reading it fails.
pub type RequestBody = Body;

/// How much a client may ask of a server, and for how long.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A TLS handshake not finished by then closes the connection (a client that connects and sends
    /// nothing, or sends its hello a byte at a time).
    pub handshake: Duration,
    /// An HTTP/1 request whose headers have not all arrived by then closes the connection; it also
    /// ends an HTTP/1 connection that sits between requests that long.
    pub header_read: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2 included, and a
    /// connection that never sends a request). A request in flight (a watch) keeps it open.
    pub idle: Duration,
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// The largest request head (HTTP/1 request line and headers; HTTP/2 header list). At least 8 KiB.
    pub max_header_bytes: usize,
    /// The largest request body. A larger declared length is answered 413 without reading it.
    pub max_body_bytes: usize,
    /// How long a request's body may take to arrive.
    pub body_read: Duration,
    /// HTTP/2 streams (requests) open at once on one connection.
    pub max_streams_per_connection: u32,
    /// TCP keepalive, and the HTTP/2 ping interval: a peer that went away is noticed.
    pub keepalive: Duration,
    /// After shutdown, how long requests in flight get to finish (no new ones are taken: HTTP/1
    /// connections close after their response, HTTP/2 ones get GOAWAY); longer ones (watches) are cut.
    pub drain: Duration,
}

impl Default for Limits {
    /// The API server's own figures where it has them: a 3 MiB body, 1,000 HTTP/2 streams a
    /// connection.
    fn default() -> Limits {
        Limits {
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(90),
            max_connections: 4096,
            max_header_bytes: 64 * 1024,
            max_body_bytes: 3 * 1024 * 1024,
            body_read: Duration::from_secs(60),
            max_streams_per_connection: 1000,
            keepalive: Duration::from_secs(30),
            drain: Duration::from_secs(8),
        }
    }
}

/// What the handshake told about a connection, for the service that serves it.
#[derive(Clone, Debug)]
pub struct Connected {
    /// The peer's address.
    pub remote: SocketAddr,
    /// The client certificate chain, leaf first, when the client sent one that the configured CA
    /// verified; empty otherwise.
    pub client_certificates: Vec<CertificateDer<'static>>,
}

/// Serves on `listener` until `shutdown`: each connection's TLS handshake, then HTTP/1.1 or HTTP/2 as
/// ALPN chose, with upgrades, each request handed to the service `make` returned for its connection.
/// With `shutdown` the listener closes at once, and the requests in flight get [`Limits::drain`] to
/// finish before their connections are cut; this returns when every connection is gone.
pub async fn serve<M, S>(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: Limits,
    make: M,
    shutdown: CancellationToken,
) where
    M: Fn(&Connected) -> S + Send + Sync + 'static,
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let make = Arc::new(make);
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut refused: u64 = 0;
    let connections = tokio_util::task::TaskTracker::new();
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving HTTPS");
    }
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, mostly: wait a little rather than spin.
                debug!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                warn!(
                    limit = limits.max_connections,
                    refused, "connection limit reached; closing new connections"
                );
            }
            drop(tcp);
            continue;
        };
        tune(&tcp, limits.keepalive);
        let acceptor = acceptor.clone();
        let make = make.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    debug!(%remote, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let session = tls.get_ref().1;
            let h2 = session.alpn_protocol() == Some(b"h2");
            let connected = Connected {
                remote,
                client_certificates: session
                    .peer_certificates()
                    .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
                    .unwrap_or_default(),
            };
            let service = make(&connected);
            let activity = Arc::new(Activity::new());
            let hyper_service = {
                let activity = activity.clone();
                let limits = limits.clone();
                hyper::service::service_fn(move |request: Request<Incoming>| {
                    let service = service.clone();
                    let guard = Activity::begin(&activity);
                    let limits = limits.clone();
                    async move {
                        let response = match declared_length(&request) {
                            Some(length) if length > limits.max_body_bytes as u64 => {
                                too_large(limits.max_body_bytes)
                            }
                            _ => {
                                let request = request.map(|body| {
                                    Body::new(Timed::new(body, limits.max_body_bytes, limits.body_read))
                                });
                                match service.oneshot(request).await {
                                    Ok(response) => response,
                                    Err(never) => match never {},
                                }
                            }
                        };
                        Ok::<_, Infallible>(response.map(|body| {
                            Body::new(Guarded {
                                inner: body,
                                _guard: guard,
                            })
                        }))
                    }
                })
            };
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .max_buf_size(limits.max_header_bytes.max(8192));
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
                .max_concurrent_streams(limits.max_streams_per_connection)
                .keep_alive_interval(limits.keepalive)
                .keep_alive_timeout(limits.keepalive);
            let builder = if h2 {
                builder.http2_only()
            } else {
                builder.http1_only()
            };
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), hyper_service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        debug!(%remote, %error, "connection ended with an error");
                    }
                    return;
                }
                _ = activity.idle_for(limits.idle) => {
                    debug!(%remote, "idle connection closed");
                    return;
                }
                _ = shutdown.cancelled() => {}
            }
            // Shutting down: finish what is in flight, take nothing new.
            connection.as_mut().graceful_shutdown();
            if tokio::time::timeout(limits.drain, connection).await.is_err() {
                debug!(%remote, "requests still in flight after the drain time; connection cut");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

fn tune(tcp: &TcpStream, keepalive: Duration) {
    let _ = tcp.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(keepalive)
        .with_interval(keepalive / 3);
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive);
}

/// The body length a request declares (hyper reads `Content-Length` into the body's size, for HTTP/1
/// and HTTP/2 alike, and refuses an HTTP/1 request whose header does not parse).
fn declared_length(request: &Request<Incoming>) -> Option<u64> {
    request.body().size_hint().exact()
}

/// The API server's answer to a body over its limit, as a Status.
fn too_large(limit: usize) -> Response<Body> {
    let status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("the request body is larger than {limit} bytes"),
        "reason": "RequestEntityTooLarge",
        "code": 413,
    });
    let mut response = Response::new(Body::from(status.to_string()));
    *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    born: Instant,
    /// Milliseconds after `born` when the count last dropped to zero.
    quiet_since: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            born: Instant::now(),
            quiet_since: AtomicU64::new(0),
        }
    }

    fn begin(this: &Arc<Activity>) -> InFlight {
        this.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(this.clone())
    }

    fn now(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            tokio::time::sleep(tick).await;
            if self.in_flight.load(Ordering::SeqCst) == 0
                && self.now().saturating_sub(self.quiet_since.load(Ordering::SeqCst)) >= idle_ms
            {
                return;
            }
        }
    }
}

/// One request in flight: from its head's arrival until its response body is sent or dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.quiet_since.store(self.0.now(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted in flight.
struct Guarded {
    inner: Body,
    _guard: InFlight,
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that must arrive in full before a deadline.
struct Timed {
    inner: Limited<Incoming>,
    limit: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Timed {
    fn new(inner: Incoming, limit: usize, within: Duration) -> Timed {
        Timed {
            inner: Limited::new(inner, limit),
            limit,
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the request body did not arrive in time")]
    Late,
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl hyper::body::Body for Timed {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| {
                f.map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        BodyError::TooLarge(this.limit)
                    } else {
                        BodyError::Read(e)
                    }
                })
            })),
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Some(Err(BodyError::Late)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads a whole request body of at most `limit` bytes, as the roles that buffer one do: its bytes, or
/// why it could not be read (too large, too slow, cut off). The server's own limits apply as well.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, String> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(body_error_message(error.as_ref(), limit)),
    }
}

fn body_error_message(error: &(dyn std::error::Error + 'static), limit: usize) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return format!("the request body is larger than {limit} bytes");
        }
        if let Some(known @ (BodyError::Late | BodyError::TooLarge(_))) = e.downcast_ref::<BodyError>() {
            return known.to_string();
        }
        source = e.source();
    }
    format!("the request body could not be read: {error}")
}
