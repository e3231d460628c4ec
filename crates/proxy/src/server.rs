//! The HTTPS listener: HTTP/1.1 and HTTP/2 (ALPN), upgrades, and client certificates verified against
//! the configured CA during the handshake.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::RwLock;
use rustls::RootCertStore;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::Proxy;
use crate::auth::{ClientCertificate, certificate_identity};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The serving certificate, replaceable while serving: each handshake uses the one held then, so a
/// renewed certificate (cert-manager) is served without a restart.
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert").finish_non_exhaustive()
    }
}

fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("cannot read the serving certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError(
            "the serving certificate file holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError(format!("cannot read the serving key: {e}")))?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError(format!("cannot use the serving key: {e}")))?;
    let certified = CertifiedKey::new(certs, signing);
    // A certificate written before its key (or the other way round) is refused, not served.
    certified.keys_match().map_err(|e| {
        TlsError(format!(
            "the serving certificate and key do not belong together: {e}"
        ))
    })?;
    Ok(Arc::new(certified))
}

impl ServingCert {
    /// A certificate chain and its key, both PEM.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServingCert, TlsError> {
        Ok(ServingCert {
            current: RwLock::new(certified_key(cert_pem, key_pem)?),
        })
    }

    /// Serves this chain and key from the next handshake on; on error the current one stays.
    pub fn replace(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        *self.current.write() = certified_key(cert_pem, key_pem)?;
        Ok(())
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

/// The serving configuration: `cert`, and, if client certificates are accepted, the CA (PEM) they
/// must chain to.
pub fn tls_config(
    cert: Arc<ServingCert>,
    client_ca_pem: Option<&[u8]>,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = match client_ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| TlsError(format!("cannot read the client CA: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError(format!("cannot use the client CA: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError(format!("cannot use the client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A self-signed certificate and key (PEM) for `names`, for when none is configured.
pub fn self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError(e.to_string()))?;
    let params = rcgen::CertificateParams::new(names.to_vec()).map_err(|e| TlsError(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| TlsError(e.to_string()))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Serves `proxy` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    proxy: Arc<Proxy>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "proxy serving HTTPS");
    }
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let proxy = proxy.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(error) => {
                    debug!(%error, "TLS handshake failed");
                    return;
                }
            };
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| certificate_identity(leaf))
                .map(ClientCertificate);
            let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
                let proxy = proxy.clone();
                if let Some(certificate) = &certificate {
                    request.extensions_mut().insert(certificate.clone());
                }
                async move { Ok::<_, Infallible>(proxy.handle(request.map(Body::new)).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::select! {
                _ = connection => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_with_someone_elses_key_is_refused() {
        let (cert, key) = self_signed(&["localhost".to_owned()]).unwrap();
        let (_, other_key) = self_signed(&["localhost".to_owned()]).unwrap();
        assert!(ServingCert::from_pem(cert.as_bytes(), key.as_bytes()).is_ok());
        let error = ServingCert::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("do not belong together"), "{error}");
        let serving = ServingCert::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert!(serving.replace(b"not pem", key.as_bytes()).is_err());
    }
}
