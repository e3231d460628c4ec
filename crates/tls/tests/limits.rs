//! The accept loop against clients that misbehave on purpose: over real sockets, with short limits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use bulkhead_tls::certs::{Plan, issue};
use bulkhead_tls::{Limits, ServingCert, read_body, serve, server_config};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

struct Server {
    addr: std::net::SocketAddr,
    ca: String,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn short() -> Limits {
    Limits {
        handshake: Duration::from_millis(400),
        header_read: Duration::from_millis(600),
        idle: Duration::from_millis(600),
        max_connections: 8,
        max_header_bytes: 16 * 1024,
        max_body_bytes: 64 * 1024,
        body_read: Duration::from_millis(600),
        max_streams_per_connection: 10,
        keepalive: Duration::from_secs(5),
        drain: Duration::from_secs(3),
    }
}

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/echo",
            post(|body: Body| async move {
                match read_body(body, usize::MAX).await {
                    Ok(bytes) => format!("read {}", bytes.len()),
                    Err(message) => message,
                }
            }),
        )
        .route(
            "/stream",
            get(|| async {
                // A watch: a chunk every 150 ms for 1.5 s, longer than the idle limit.
                let chunks = futures::stream::unfold(0, |n| async move {
                    if n == 10 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    Some((Ok::<_, std::io::Error>(format!("tick {n}\n")), n + 1))
                });
                Body::from_stream(chunks)
            }),
        )
}

async fn start(limits: Limits) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bundle = issue(
        None,
        Plan::NewAuthority,
        &["127.0.0.1".to_owned()],
        SystemTime::now(),
    )
    .unwrap();
    let cert = Arc::new(ServingCert::from_pem(bundle.cert.as_bytes(), bundle.key.as_bytes()).unwrap());
    let config = server_config(cert, None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let router = app();
    tokio::spawn(serve(
        listener,
        config,
        limits,
        move |_| router.clone(),
        shutdown.clone(),
    ));
    Server {
        addr,
        ca: bundle.ca_cert,
        shutdown,
    }
}

async fn connect(server: &Server, alpn: &[u8]) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server.ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(server.addr).await?;
    connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
}

/// Reads until the peer closes (or `limit` passes); what was read and how long it took.
async fn read_to_close<S: AsyncReadExt + Unpin>(stream: &mut S, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the server kept the connection open for {limit:?}; read so far: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), started.elapsed())
}

async fn get_ok(server: &Server) -> String {
    let mut tls = connect(server, b"http/1.1").await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    read_to_close(&mut tls, Duration::from_secs(5)).await.0
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_disconnected() {
    let server = start(short()).await;
    // Half-open: a TCP connection that never sends a ClientHello.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // Slow hello: the first bytes of a TLS record, then nothing.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let (_, silent_took) = read_to_close(&mut silent, Duration::from_secs(5)).await;
    let (_, slow_took) = read_to_close(&mut slow, Duration::from_secs(5)).await;
    assert!(silent_took >= Duration::from_millis(300), "{silent_took:?}");
    assert!(slow_took < Duration::from_secs(3), "{slow_took:?}");
    assert!(get_ok(&server).await.contains("200 OK"));
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_are_cut_off_while_others_are_served() {
    let server = start(short()).await;
    let mut loris = connect(&server, b"http/1.1").await.unwrap();
    loris.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if loris.write_all(b"X").await.is_err() || loris.flush().await.is_err() {
            closed = true;
            break;
        }
        // A served request in between: the slow one ties up nothing.
        if started.elapsed() < Duration::from_millis(300) {
            assert!(get_ok(&server).await.contains("200 OK"));
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), loris.read(&mut probe)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a request whose headers never end kept its connection");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn oversized_headers_are_refused_with_431() {
    let server = start(short()).await;
    let mut tls = connect(&server, b"http/1.1").await.unwrap();
    let big = "a".repeat(32 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let _ = tls.write_all(request.as_bytes()).await;
    let (response, _) = read_to_close(&mut tls, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response:?}");
}

#[tokio::test]
async fn a_declared_body_over_the_limit_gets_413_without_being_read() {
    let server = start(short()).await;
    let mut tls = connect(&server, b"http/1.1").await.unwrap();
    tls.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        .await
        .unwrap();
    let (response, _) = read_to_close(&mut tls, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response:?}");
    assert!(
        response.contains(r#""reason":"RequestEntityTooLarge""#),
        "{response:?}"
    );
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_and_a_body_that_stalls_cannot_be_read() {
    let server = start(short()).await;
    let mut tls = connect(&server, b"http/1.1").await.unwrap();
    tls.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = vec![b'x'; 16 * 1024];
    for _ in 0..6 {
        let _ = tls.write_all(b"4000\r\n").await;
        let _ = tls.write_all(&chunk).await;
        let _ = tls.write_all(b"\r\n").await;
    }
    let _ = tls.write_all(b"0\r\n\r\n").await;
    let (response, _) = read_to_close(&mut tls, Duration::from_secs(5)).await;
    assert!(response.contains("larger than 65536 bytes"), "{response:?}");

    let mut tls = connect(&server, b"http/1.1").await.unwrap();
    tls.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let (response, took) = read_to_close(&mut tls, Duration::from_secs(5)).await;
    assert!(response.contains("did not arrive in time"), "{response:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // And a body within the limits is read whole.
    let mut tls = connect(&server, b"http/1.1").await.unwrap();
    tls.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let (response, _) = read_to_close(&mut tls, Duration::from_secs(5)).await;
    assert!(response.contains("read 10"), "{response:?}");
}

#[tokio::test]
async fn past_the_connection_limit_new_connections_are_closed_until_a_slot_frees() {
    let server = start(Limits {
        max_connections: 2,
        idle: Duration::from_secs(30),
        header_read: Duration::from_secs(30),
        ..short()
    })
    .await;
    let first = connect(&server, b"http/1.1").await.unwrap();
    let _second = connect(&server, b"http/1.1").await.unwrap();
    let third = connect(&server, b"http/1.1").await;
    let refused = match third {
        Err(_) => true,
        // The handshake can race the close; the connection must then be dead.
        Ok(mut tls) => {
            let _ = tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let (response, _) = read_to_close(&mut tls, Duration::from_secs(5)).await;
            response.is_empty()
        }
    };
    assert!(refused, "a third connection was served past a limit of two");
    drop(first);
    let started = Instant::now();
    loop {
        if let Ok(mut tls) = connect(&server, b"http/1.1").await {
            let _ = tls
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let (response, _) = read_to_close(&mut tls, Duration::from_secs(5)).await;
            if response.contains("200 OK") {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the freed slot was never reused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn idle_connections_are_closed_but_a_long_response_keeps_its_own() {
    let server = start(short()).await;
    // HTTP/2 that never sends its preface, and HTTP/1.1 that never sends a request.
    let mut h2 = connect(&server, b"h2").await.unwrap();
    let mut h1 = connect(&server, b"http/1.1").await.unwrap();
    let (_, took) = read_to_close(&mut h2, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(500), "{took:?}");
    let (_, took) = read_to_close(&mut h1, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "{took:?}");

    // A watch-like response lasting 1.5 s (over twice the idle limit) arrives whole.
    let mut tls = connect(&server, b"http/1.1").await.unwrap();
    tls.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (response, took) = read_to_close(&mut tls, Duration::from_secs(10)).await;
    assert_eq!(response.matches("tick").count(), 10, "{response:?}");
    assert!(took >= Duration::from_millis(1300), "{took:?}");
}

/// Starts `/stream` (1.5 s of ticks) on a fresh connection, shuts the server down 300 ms in, and
/// returns what the stream delivered and whether a new connection was refused meanwhile.
async fn stream_across_shutdown(drain: Duration) -> (String, bool) {
    let server = start(Limits { drain, ..short() }).await;
    let mut tls = connect(&server, b"http/1.1").await.unwrap();
    tls.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = TcpStream::connect(server.addr).await.is_err();
    let (got, _) = read_to_close(&mut tls, Duration::from_secs(5)).await;
    (got, refused)
}

#[tokio::test]
async fn a_shutdown_lets_requests_in_flight_finish_and_takes_no_new_connection() {
    let (got, refused) = stream_across_shutdown(Duration::from_secs(3)).await;
    assert!(refused, "a new connection was accepted after shutdown");
    assert!(got.contains("tick 9"), "the request in flight was cut: {got}");
}

#[tokio::test]
async fn a_request_longer_than_the_drain_time_is_cut() {
    let (got, refused) = stream_across_shutdown(Duration::from_millis(200)).await;
    assert!(refused);
    assert!(got.contains("tick 0") && !got.contains("tick 9"), "{got}");
}
