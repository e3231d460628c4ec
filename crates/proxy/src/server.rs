//! The proxy's HTTPS listener: `bulkhead-tls` serves it (HTTP/1.1 and HTTP/2, upgrades, the shared
//! timeouts and limits); client certificates, verified against the configured CA during the handshake,
//! are read here into the identity they carry.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bulkhead_tls::{Connected, Limits};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Proxy;
use crate::auth::{ClientCertificate, certificate_identity};

pub use bulkhead_tls::{ServingCert, TlsError, self_signed, server_config as tls_config};

/// The proxy's limits: the API server's body limit and HTTP/2 streams a connection (a GitOps agent
/// keeps a watch open per kind over one connection), and room for many clients, each holding watches
/// open for as long as they like. An HTTP/1 connection between requests, or one that never sends a
/// request, is closed after 90 s.
pub fn limits() -> Limits {
    Limits {
        max_connections: 8192,
        header_read: Duration::from_secs(90),
        ..Limits::default()
    }
}

/// Serves `proxy` on `listener` with [`limits`] until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    proxy: Arc<Proxy>,
    shutdown: CancellationToken,
) {
    let make = move |connected: &Connected| {
        let certificate = connected
            .client_certificates
            .first()
            .and_then(|leaf| certificate_identity(leaf))
            .map(ClientCertificate);
        let proxy = proxy.clone();
        tower::service_fn(move |mut request: http::Request<Body>| {
            let proxy = proxy.clone();
            if let Some(certificate) = &certificate {
                request.extensions_mut().insert(certificate.clone());
            }
            async move { Ok::<_, Infallible>(proxy.handle(request).await) }
        })
    };
    bulkhead_tls::serve(listener, config, limits(), make, shutdown).await;
}
