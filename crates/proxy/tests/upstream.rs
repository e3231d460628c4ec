//! The proxy over real sockets against a stand-in API server that records what reaches it: what is
//! forwarded (credentials, impersonation), refused, and upgraded (exec-style connections echo bytes
//! both ways through the proxy).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use bulkhead_cache::Cache;
use bulkhead_proxy::{ApiServer, Proxy, ProxyMetrics, server};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::runtime::watcher::Event;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Reviews of `slow-` tokens in flight at the stand-in API server now, and at most.
static SLOW_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static SLOW_MOST_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// What the stand-in API server saw: (method, path, authorization, impersonate-user, impersonate-groups).
type Seen = Arc<Mutex<Vec<(String, String, String, String, Vec<String>)>>>;

async fn api_server(seen: Seen) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let seen = seen.clone();
                    async move { Ok::<_, Infallible>(answer(request, seen).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn header(request: &Request<Incoming>, name: &str) -> String {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn json_answer(code: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

async fn answer(mut request: Request<Incoming>, seen: Seen) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    seen.lock().unwrap().push((
        request.method().to_string(),
        path.clone(),
        header(&request, "authorization"),
        header(&request, "impersonate-user"),
        request
            .headers()
            .get_all("impersonate-group")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect(),
    ));
    if path.ends_with("/tokenreviews") {
        let body: Value =
            serde_json::from_slice(&request.body_mut().collect().await.unwrap().to_bytes()).unwrap();
        if body["spec"]["token"]
            .as_str()
            .unwrap_or_default()
            .starts_with("slow-")
        {
            // An API server under load: each review of these tokens takes a while.
            let now = SLOW_IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
            SLOW_MOST_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(600)).await;
            SLOW_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        }
        let status = if body["spec"]["token"] == "alice-token" {
            json!({"authenticated": true, "user": {"username": "alice", "groups": ["devs", "system:authenticated"]}})
        } else {
            json!({"authenticated": false, "error": "invalid bearer token"})
        };
        return json_answer(
            StatusCode::CREATED,
            json!({"kind": "TokenReview", "status": status}),
        );
    }
    if path.ends_with("/selfsubjectaccessreviews") {
        // As the API server does: protobuf to a client that asks for it first, JSON otherwise.
        if header(&request, "accept").starts_with("application/vnd.kubernetes.protobuf") {
            let mut response = Response::new(Full::new(Bytes::from_static(b"k8s\x00\x0a\x01")));
            *response.status_mut() = StatusCode::CREATED;
            response.headers_mut().insert(
                "content-type",
                "application/vnd.kubernetes.protobuf".parse().unwrap(),
            );
            return response;
        }
        // A JSON review is answered for what it asks (RBAC says no: the caller owns no namespaces).
        let body = request.body_mut().collect().await.unwrap().to_bytes();
        let spec = serde_json::from_slice::<Value>(&body)
            .map(|v| v["spec"].clone())
            .unwrap_or_else(|_| json!({"resourceAttributes": {"verb": "list", "resource": "namespaces"}}));
        return json_answer(
            StatusCode::CREATED,
            json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                   "spec": spec, "status": {"allowed": false}}),
        );
    }
    if path.ends_with("/subjectaccessreviews") {
        return json_answer(
            StatusCode::CREATED,
            json!({"kind": "SubjectAccessReview", "status": {"allowed": false}}),
        );
    }
    if request.headers().contains_key("upgrade") {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let mut io = TokioIo::new(upgrade.await.unwrap());
            let mut buf = [0u8; 1024];
            loop {
                let n = io.read(&mut buf).await.unwrap_or(0);
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert("connection", "Upgrade".parse().unwrap());
        response.headers_mut().insert("upgrade", "echo".parse().unwrap());
        return response;
    }
    json_answer(StatusCode::OK, json!({"kind": "Pod", "metadata": {"name": "p"}}))
}

struct Running {
    addr: std::net::SocketAddr,
    serving: Arc<server::ServingCert>,
    roots: Arc<rustls::RootCertStore>,
    seen: Seen,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn start() -> Running {
    start_with(None).await
}

async fn start_with(client_ca: Option<&str>) -> Running {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seen: Seen = Arc::default();
    let url = api_server(seen.clone()).await;
    let mut config = kube::Config::new(url.parse().unwrap());
    config.auth_info.token = Some("proxy-token".to_owned().into());
    let api = ApiServer::new(&config, false).unwrap();
    let cache = Cache::detached();
    let tenant: bulkhead_api::Tenant = serde_json::from_value(json!({
        "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": "solar"},
        "spec": {"owners": [{"kind": "User", "name": "alice"}]},
    }))
    .unwrap();
    for event in [Event::Init, Event::InitApply(tenant), Event::InitDone] {
        cache.tenants_feed().apply(event);
    }
    for event in [Event::Init, Event::InitDone] {
        cache.namespaces_feed().apply(event);
    }
    let proxy = Arc::new(Proxy::new(
        cache,
        api,
        Duration::from_secs(10),
        "bulkhead".into(),
        ProxyMetrics::unregistered().unwrap(),
    ));
    let (cert, key) = server::self_signed(&["localhost".to_owned()]).unwrap();
    let serving = Arc::new(server::ServingCert::from_pem(cert.as_bytes(), key.as_bytes()).unwrap());
    let tls = server::tls_config(serving.clone(), client_ca.map(str::as_bytes)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve(listener, tls, proxy, shutdown.clone()));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert.as_bytes()).unwrap())
        .unwrap();
    Running {
        addr,
        serving,
        roots: Arc::new(roots),
        seen,
        _shutdown: shutdown.drop_guard(),
    }
}

async fn connect(running: &Running) -> tokio_rustls::client::TlsStream<TcpStream> {
    connect_as(running, None).await
}

/// Connects, presenting a client certificate (PEM chain, PEM key) if given.
async fn connect_as(
    running: &Running,
    identity: Option<(&str, &str)>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    handshake(running, identity).await.unwrap()
}

async fn handshake(
    running: &Running,
    identity: Option<(&str, &str)>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let builder = rustls::ClientConfig::builder().with_root_certificates(running.roots.clone());
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(running.addr).await.unwrap();
    connector.connect("localhost".try_into().unwrap(), tcp).await
}

/// Sends a raw HTTP/1.1 request head and returns the response head.
async fn exchange(stream: &mut tokio_rustls::client::TlsStream<TcpStream>, head: &str) -> String {
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "connection closed: {out:?}"
        );
        out.push(byte[0]);
    }
    String::from_utf8(out).unwrap()
}

/// Alice (a valid token) gets a pod through the proxy.
async fn alice_gets_her_pod(running: &Running) -> (StatusCode, Value) {
    get(
        running,
        "/api/v1/namespaces/a/pods/p",
        &[("authorization", "Bearer alice-token")],
    )
    .await
}

/// How many TokenReviews reached the stand-in API server.
fn token_reviews(running: &Running) -> usize {
    running
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.1.ends_with("/tokenreviews"))
        .count()
}

async fn get(running: &Running, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    get_as(running, None, path, headers).await
}

async fn get_as(
    running: &Running,
    identity: Option<(&str, &str)>,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let stream = connect_as(running, identity).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::get(path).header("host", "localhost");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = sender
        .send_request(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let code = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn requests_go_through_as_the_caller_never_with_the_callers_credentials() {
    let running = start().await;
    let (code, body) = get(
        &running,
        "/api/v1/namespaces/a/pods/p",
        &[
            ("authorization", "Bearer alice-token"),
            ("impersonate-extra-x", "y"),
        ],
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("impersonate-extra-x"),
        "{body}"
    );

    let (code, body) = alice_gets_her_pod(&running).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let seen = running.seen.lock().unwrap().clone();
    let forwarded = seen
        .iter()
        .find(|s| s.1 == "/api/v1/namespaces/a/pods/p")
        .unwrap();
    assert_eq!(
        forwarded.2, "Bearer proxy-token",
        "the proxy's credentials, not alice's token"
    );
    assert_eq!(forwarded.3, "alice");
    assert_eq!(forwarded.4, ["devs", "system:authenticated"]);
    let reviews = seen.iter().filter(|s| s.1.ends_with("/tokenreviews")).count();
    assert_eq!(reviews, 1, "the second request used the cached review");
}

#[tokio::test]
async fn a_flood_of_random_tokens_gets_bounded_reviews_and_429s_not_unbounded_work() {
    let running = start().await;
    let floods: Vec<_> = (0..450)
        .map(|i| {
            let running = &running;
            async move {
                let token = format!("Bearer slow-{i}-{}", i * 7919);
                get(running, "/api/v1/pods", &[("authorization", token.as_str())]).await
            }
        })
        .collect();
    let answers = futures::future::join_all(floods).await;
    let refused = answers
        .iter()
        .filter(|(c, _)| *c == StatusCode::UNAUTHORIZED)
        .count();
    let busy: Vec<_> = answers
        .iter()
        .filter(|(c, _)| *c == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(
        refused + busy.len(),
        answers.len(),
        "every one refused, none let through"
    );
    assert!(
        !busy.is_empty(),
        "past the waiting bound, requests are turned away at once"
    );
    assert_eq!(busy[0].1["reason"], "TooManyRequests", "{}", busy[0].1);
    let most = SLOW_MOST_IN_FLIGHT.load(Ordering::SeqCst);
    assert!(
        most <= bulkhead_proxy::auth::REVIEWS_IN_FLIGHT,
        "{most} TokenReviews in flight at once"
    );
    let reviews = token_reviews(&running);
    assert_eq!(
        reviews, refused,
        "one review per token answered, none for the ones turned away"
    );
    // The flood over, a real caller is served.
    let (code, body) = alice_gets_her_pod(&running).await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn strangers_and_forged_identities_are_refused_before_anything_is_forwarded() {
    let running = start().await;
    let (code, body) = get(&running, "/api/v1/pods", &[]).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(body["kind"], "Status");
    let (code, body) = get(&running, "/api/v1/pods", &[("authorization", "Bearer stolen")]).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(
        body["message"].as_str().unwrap().contains("invalid bearer token"),
        "{body}"
    );
    let (code, body) = get(
        &running,
        "/api/v1/pods",
        &[
            ("authorization", "Bearer alice-token"),
            ("impersonate-user", "admin"),
            ("impersonate-group", "system:masters"),
        ],
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(
        body["message"].as_str().unwrap().contains("cannot impersonate"),
        "{body}"
    );
    let seen = running.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|s| s.1.ends_with("reviews")),
        "only reviews reached the API server: {seen:?}"
    );
    let (code, _) = get(&running, "/api/v1/pods", &[("authorization", "Bearer stolen")]).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let reviews_of_stolen = running
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.1.ends_with("/tokenreviews"))
        .count();
    assert_eq!(
        reviews_of_stolen, 2,
        "alice once, the stolen token once: its failure was cached too"
    );
}

#[tokio::test]
async fn upgraded_connections_carry_bytes_both_ways() {
    let running = start().await;
    let mut stream = connect(&running).await;
    let head = exchange(
        &mut stream,
        "POST /api/v1/namespaces/a/pods/p/exec?command=sh HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer alice-token\r\nconnection: Upgrade\r\nupgrade: echo\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_lowercase().contains("upgrade: echo"), "{head}");
    for message in ["ping", "a longer line of bytes\n"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut back = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
            .await
            .expect("echo arrives")
            .unwrap();
        assert_eq!(back, message.as_bytes());
    }
    let seen = running.seen.lock().unwrap().clone();
    let exec = seen.iter().find(|s| s.1.ends_with("/exec")).unwrap();
    assert_eq!(
        (exec.2.as_str(), exec.3.as_str()),
        ("Bearer proxy-token", "alice")
    );
}

#[tokio::test]
async fn client_certificates_from_the_configured_ca_name_the_caller() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "cluster-ca");
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let client = |cn: &str, issuer: &Issuer<'_, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "solar-devs");
        (params.signed_by(&key, issuer).unwrap().pem(), key.serialize_pem())
    };
    let running = start_with(Some(&ca_pem)).await;
    let (cert, key) = client("carol", &issuer);
    let (code, body) = get_as(&running, Some((&cert, &key)), "/api/v1/namespaces/a/pods/p", &[]).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let seen = running.seen.lock().unwrap().clone();
    let forwarded = seen
        .iter()
        .find(|s| s.1 == "/api/v1/namespaces/a/pods/p")
        .unwrap();
    assert_eq!(forwarded.3, "carol");
    assert_eq!(forwarded.4, ["solar-devs", "system:authenticated"]);
    assert!(
        seen.iter().all(|s| !s.1.ends_with("/tokenreviews")),
        "no TokenReview for a certificate"
    );

    // A certificate from another CA does not get through the handshake.
    let other_key = KeyPair::generate().unwrap();
    let mut other_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other = Issuer::new(other_params, other_key);
    let (cert, key) = client("mallory", &other);
    let handshake = handshake(&running, Some((&cert, &key))).await;
    let refused = match handshake {
        Err(_) => true,
        Ok(mut stream) => {
            // TLS 1.3 reports a rejected client certificate on the first read.
            let _ = stream.write_all(b"GET /api HTTP/1.1\r\nhost: x\r\n\r\n").await;
            let mut buf = [0u8; 16];
            !matches!(stream.read(&mut buf).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "a certificate from an unknown CA was accepted");
}

#[tokio::test]
async fn clients_may_speak_http2() {
    let running = start().await;
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(running.roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(running.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get("https://localhost/api/v1/namespaces/a/pods/p")
        .header("authorization", "Bearer alice-token")
        .body(Body::empty())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["kind"], "Pod");
    let seen = running.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|s| s.1 == "/api/v1/namespaces/a/pods/p" && s.3 == "alice")
    );
}

#[tokio::test]
async fn a_renewed_certificate_is_served_from_the_next_handshake() {
    let running = start().await;
    let dir = tempfile::tempdir().unwrap();
    let (first_cert, first_key) = server::self_signed(&["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &first_cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), &first_key).unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(bulkhead_proxy::reload_certificates(
        dir.path().to_owned(),
        running.serving.clone(),
        None,
        Duration::from_millis(50),
        shutdown,
    ));
    // A renewal replaces what is served (here: the certificate the proxy started with).
    let (renewed, renewed_key) = server::self_signed(&["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &renewed).unwrap();
    std::fs::write(dir.path().join("tls.key"), &renewed_key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(renewed.as_bytes()).unwrap())
        .unwrap();
    let config = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut served = false;
    for _ in 0..100 {
        let tcp = TcpStream::connect(running.addr).await.unwrap();
        if tokio_rustls::TlsConnector::from(config.clone())
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the renewed certificate was never served");
    // A broken renewal keeps the current certificate.
    std::fs::write(dir.path().join("tls.crt"), "garbage").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tcp = TcpStream::connect(running.addr).await.unwrap();
    assert!(
        tokio_rustls::TlsConnector::from(config)
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .is_ok(),
        "a broken renewal replaced a working certificate"
    );
}

#[tokio::test]
async fn self_reviews_sent_in_protobuf_are_answered_in_json_with_namespaces_listable() {
    let running = start().await;
    let stream = connect(&running).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    // kubectl auth can-i: a protobuf body, protobuf preferred in the answer, JSON accepted.
    let request = Request::post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        .header("host", "localhost")
        .header("authorization", "Bearer alice-token")
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .header("accept", "application/vnd.kubernetes.protobuf, */*")
        .body(Body::from(&b"k8s\x00\x0a\x01"[..]))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let review: Value = serde_json::from_slice(&bytes).expect("a JSON answer");
    assert_eq!(review["status"]["allowed"], true, "{review}");
}

#[tokio::test]
async fn listing_namespaces_is_allowed_whatever_namespace_a_review_names_but_not_getting_anothers() {
    let running = start().await;
    for (verb, name, allowed) in [
        ("list", "default", true),
        ("watch", "default", true),
        ("get", "default", false),
    ] {
        let stream = connect(&running).await;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": verb, "resource": "namespaces", "name": name}}});
        let request = Request::post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
            .header("host", "localhost")
            .header("authorization", "Bearer alice-token")
            .header("content-type", "application/json")
            .body(Body::from(review.to_string()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(answer["status"]["allowed"], allowed, "{verb} {name}: {answer}");
    }
}
