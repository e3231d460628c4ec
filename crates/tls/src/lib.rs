//! TLS for every role, in one place: a certificate that can be replaced while serving
//! ([`ServingCert`]), the rustls configuration ([`server_config`]), the accept loop with its timeouts
//! and limits ([`serve`]), and issuing certificates ([`certs`]).
//!
//! The webhook, the proxy and the testkit serve through [`serve`]; the controller issues the webhook's
//! certificate with [`certs`]. No role depends on another for any of it, and nothing here knows about
//! Kubernetes.

pub mod certs;
mod serve;

use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

pub use serve::{Connected, Limits, RequestBody, read_body, serve};

/// Why a certificate, a key or a TLS configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// A certificate chain and its key, both PEM, checked to belong together (a certificate written
/// before its key, or the other way round, is refused rather than served).
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("the certificate is not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError("the certificate file holds no certificate".to_owned()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError(format!("the key is not PEM: {e}")))?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError(format!("the key is not usable: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError(format!("the certificate and key do not belong together: {e}")))?;
    Ok(Arc::new(certified))
}

/// The serving certificate, replaceable while serving: each handshake uses the one held then, so a
/// renewed certificate (cert-manager, the controller's Secret) is served without a restart. Until
/// one is set, handshakes fail.
#[derive(Default)]
pub struct ServingCert {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCert")
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

impl ServingCert {
    /// Serving this chain and key (PEM).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServingCert, TlsError> {
        let serving = ServingCert::default();
        serving.replace(cert_pem, key_pem)?;
        Ok(serving)
    }

    /// Serves this chain and key (PEM) from the next handshake on; on error the current one stays.
    pub fn replace(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        self.set(certified_key(cert_pem, key_pem)?);
        Ok(())
    }

    /// Serves `key` from the next handshake on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write() = Some(key);
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.read().is_some()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().clone()
    }
}

/// The rustls configuration every role serves with: `cert`, HTTP/2 and HTTP/1.1 by ALPN, and, when
/// `client_ca_pem` is given, client certificates verified against that CA during the handshake
/// (a client without one is still let in, to authenticate by token).
pub fn server_config(
    cert: Arc<ServingCert>,
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
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
    Ok(Arc::new(config))
}

/// A self-signed certificate and key (PEM) for `names`, for when none is configured.
pub fn self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError(e.to_string()))?;
    let params = rcgen::CertificateParams::new(names.to_vec()).map_err(|e| TlsError(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| TlsError(e.to_string()))?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_with_someone_elses_key_is_refused_and_the_current_one_stays() {
        let (cert, key) = self_signed(&["localhost".to_owned()]).unwrap();
        let (_, other_key) = self_signed(&["localhost".to_owned()]).unwrap();
        let error = ServingCert::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("do not belong together"), "{error}");
        let serving = ServingCert::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let before = serving.current.read().clone().unwrap();
        assert!(serving.replace(b"not pem", key.as_bytes()).is_err());
        assert!(serving.replace(cert.as_bytes(), other_key.as_bytes()).is_err());
        let after = serving.current.read().clone().unwrap();
        assert!(Arc::ptr_eq(&before, &after));
    }

    #[test]
    fn nothing_is_served_before_a_certificate_is_set() {
        let serving = ServingCert::default();
        assert!(!serving.is_loaded());
        assert!(server_config(Arc::new(serving), None).is_ok());
        assert!(
            server_config(
                Arc::new(ServingCert::default()),
                Some(b"-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n")
            )
            .is_err()
        );
    }
}
