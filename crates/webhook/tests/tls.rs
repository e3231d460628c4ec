//! The webhook's TLS: it serves whatever certificate is current, and a replaced one from the next
//! handshake on, without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test file: failing loudly is the point

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bulkhead_cache::Cache;
use bulkhead_tls::certs::{Bundle, Plan, TLS_CERT, TLS_KEY, issue};
use bulkhead_webhook::{AdmissionMetrics, CertSource, Settings, run};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn bundle() -> Bundle {
    bundle_for("127.0.0.1")
}

fn bundle_for(name: &str) -> Bundle {
    issue(None, Plan::NewAuthority, &[name.to_owned()], SystemTime::now()).unwrap()
}

/// Connects trusting every CA given; returns the leaf certificate the server presented.
async fn presented(addr: std::net::SocketAddr, cas: &[&Bundle]) -> Result<CertificateDer<'static>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for b in cas {
        for c in CertificateDer::pem_slice_iter(b.ca_cert.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    Ok(session.peer_certificates().unwrap()[0].clone().into_owned())
}

fn leaf(b: &Bundle) -> CertificateDer<'static> {
    CertificateDer::pem_slice_iter(b.cert.as_bytes())
        .next()
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_certificate_replaced_in_its_directory_is_served_from_the_next_handshake() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (bundle(), bundle());
    let write = |b: &Bundle| {
        std::fs::write(dir.path().join(TLS_CERT), &b.cert).unwrap();
        std::fs::write(dir.path().join(TLS_KEY), &b.key).unwrap();
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The client is only used to record denial Events; nothing here is denied.
    let client = kube::Client::try_from(kube::Config::new("https://127.0.0.1:1".parse().unwrap())).unwrap();
    let (up_tx, mut up) = watch::channel(false);
    let shutdown = CancellationToken::new();
    let settings = Settings {
        listener,
        own_identity: String::new(),
        cert_source: CertSource::Dir(dir.path().to_owned()),
        reload_every: Duration::from_millis(100),
        expected_names: vec!["127.0.0.1".to_owned()],
    };
    let metrics = AdmissionMetrics::register(&prometheus::Registry::new()).unwrap();
    let task = tokio::spawn(run(
        client,
        Cache::detached(),
        settings,
        metrics,
        up_tx,
        shutdown.clone(),
    ));

    // No certificate yet: not up, and handshakes fail.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!*up.borrow());
    assert!(presented(addr, &[&first]).await.is_err());

    // A certificate left from a run at another address: a client for 127.0.0.1 (the API server) refuses
    // it, and the role is not up with it.
    let stale = bundle_for("10.9.8.7");
    write(&stale);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let refused = presented(addr, &[&stale]).await.unwrap_err();
    assert!(refused.contains("not valid for name"), "{refused}");
    assert!(
        !*up.borrow(),
        "up with a certificate that does not name 127.0.0.1"
    );

    write(&first);
    tokio::time::timeout(Duration::from_secs(5), up.wait_for(|u| *u))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(presented(addr, &[&first]).await.unwrap(), leaf(&first));

    write(&second);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = presented(addr, &[&first, &second]).await.unwrap();
        if got == leaf(&second) {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A client that trusts only the old CA now fails: the old certificate is gone.
    assert!(presented(addr, &[&first]).await.is_err());

    // A broken file keeps the last good certificate.
    std::fs::write(dir.path().join(TLS_KEY), "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(presented(addr, &[&second]).await.unwrap(), leaf(&second));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}
