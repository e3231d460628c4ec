//! Throwaway TLS: a self-signed CA and a serving certificate signed by it, made at start-up. The server
//! uses it, and tests that need a TLS peer (an admission webhook) can make their own.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A serving certificate and the CA that signed it.
#[derive(Clone)]
pub struct ServingCert {
    /// The CA certificate, PEM (what clients trust: kubeconfig `certificate-authority-data`, caBundle).
    pub ca_pem: String,
    /// The serving certificate, PEM.
    pub cert_pem: String,
    /// The serving key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate chain, DER.
    pub chain: Vec<CertificateDer<'static>>,
    /// The key, DER.
    pub key_der: Vec<u8>,
}

impl ServingCert {
    /// A CA and a certificate for these DNS names and IP addresses.
    pub fn generate(names: &[&str]) -> Result<ServingCert, rcgen::Error> {
        let ca = certificate_authority("bulkhead-testkit-ca")?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("localhost"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params.signed_by(&key, &ca)?;
        Ok(ServingCert {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            chain: vec![cert.der().clone(), ca.der().clone()],
            key_der: key.serialize_der(),
        })
    }

    /// A rustls server configuration serving this certificate, offering HTTP/2 and HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A throwaway self-signed CA named `common_name`.
pub fn certificate_authority(common_name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
}

/// Serves an axum router over TLS on a listener until `shutdown`, through the same accept loop and
/// limits as Bulkhead's roles, except the body limit: the testkit answers an oversized body itself,
/// as the API server does.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let limits = bulkhead_tls::Limits {
        max_body_bytes: 64 * 1024 * 1024,
        max_connections: 16 * 1024,
        // A stopped API server cuts its connections, watches included.
        drain: std::time::Duration::ZERO,
        ..bulkhead_tls::Limits::default()
    };
    bulkhead_tls::serve(listener, config, limits, move |_| app.clone(), shutdown).await;
}
