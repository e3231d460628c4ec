//! Certificates without cert-manager: a self-signed CA and a serving certificate it signs, kept in a
//! Secret. Issuing and the renewal decision are here; the controller role keeps the Secret, and the
//! webhook role serves whatever the Secret (or a certificate directory) holds, reloading it on change.
//! The testkit issues its throwaway certificates here too.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::TlsError;

/// Secret keys.
pub const CA_CERT: &str = "ca.crt";
/// The CA's private key.
pub const CA_KEY: &str = "ca.key";
/// The serving certificate (followed by the CA certificate).
pub const TLS_CERT: &str = "tls.crt";
/// The serving key.
pub const TLS_KEY: &str = "tls.key";
/// Annotation: when the serving certificate expires (Unix seconds).
pub const NOT_AFTER: &str = "bulkhead.dev/not-after";
/// Annotation: when the CA expires (Unix seconds).
pub const CA_NOT_AFTER: &str = "bulkhead.dev/ca-not-after";
/// Annotation: the names the serving certificate is for, comma-separated.
pub const NAMES: &str = "bulkhead.dev/names";

/// How long a CA lives.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a serving certificate lives.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Renew a serving certificate this long before it expires (a CA: twice this plus a serving lifetime).
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

const CA_COMMON_NAME: &str = "bulkhead-webhook-ca";

/// A CA and a serving certificate, PEM, with their expiry times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// CA certificate (the caBundle).
    pub ca_cert: String,
    /// CA key.
    pub ca_key: String,
    /// Serving certificate chain: leaf then CA.
    pub cert: String,
    /// Serving key.
    pub key: String,
    /// Serving certificate expiry, Unix seconds.
    pub not_after: u64,
    /// CA expiry, Unix seconds.
    pub ca_not_after: u64,
    /// Names the serving certificate covers.
    pub names: Vec<String>,
}

impl Bundle {
    /// The Secret `data` (as strings) and annotations for this bundle.
    pub fn to_secret_parts(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let data = BTreeMap::from([
            (CA_CERT.to_owned(), self.ca_cert.clone()),
            (CA_KEY.to_owned(), self.ca_key.clone()),
            (TLS_CERT.to_owned(), self.cert.clone()),
            (TLS_KEY.to_owned(), self.key.clone()),
        ]);
        let annotations = BTreeMap::from([
            (NOT_AFTER.to_owned(), self.not_after.to_string()),
            (CA_NOT_AFTER.to_owned(), self.ca_not_after.to_string()),
            (NAMES.to_owned(), self.names.join(",")),
        ]);
        (data, annotations)
    }

    /// Reads a bundle back from Secret data and annotations; `None` if anything is missing.
    pub fn from_secret_parts(
        data: &BTreeMap<String, Vec<u8>>,
        annotations: &BTreeMap<String, String>,
    ) -> Option<Bundle> {
        let text = |k: &str| data.get(k).and_then(|v| String::from_utf8(v.clone()).ok());
        let number = |k: &str| annotations.get(k).and_then(|v| v.parse::<u64>().ok());
        Some(Bundle {
            ca_cert: text(CA_CERT)?,
            ca_key: text(CA_KEY)?,
            cert: text(TLS_CERT)?,
            key: text(TLS_KEY)?,
            not_after: number(NOT_AFTER)?,
            ca_not_after: number(CA_NOT_AFTER)?,
            names: annotations
                .get(NAMES)?
                .split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// What to do with the certificates found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// They are good.
    Keep,
    /// Issue a new serving certificate with the same CA (expiring, or the names changed).
    NewCertificate,
    /// Start over with a new CA (none yet, unreadable, or the CA itself is expiring).
    NewAuthority,
}

/// Decides whether the certificates in `current` still serve `names` at `now`.
pub fn plan(current: Option<&Bundle>, names: &[String], now: SystemTime) -> Plan {
    let Some(bundle) = current else {
        return Plan::NewAuthority;
    };
    let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let ca_margin = (2 * RENEW_BEFORE + CERT_VALIDITY).as_secs();
    if bundle.ca_not_after <= now + ca_margin || KeyPair::from_pem(&bundle.ca_key).is_err() {
        return Plan::NewAuthority;
    }
    let mut have = bundle.names.clone();
    have.sort();
    let mut want = names.to_vec();
    want.sort();
    if bundle.not_after <= now + RENEW_BEFORE.as_secs() || have != want {
        return Plan::NewCertificate;
    }
    Plan::Keep
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, CA_COMMON_NAME);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn at(time: SystemTime) -> time::OffsetDateTime {
    let secs = time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Issues what `plan` asks for: a new CA and certificate, or a new certificate from `current`'s CA.
/// `names` are DNS names or IP addresses.
pub fn issue(
    current: Option<&Bundle>,
    plan: Plan,
    names: &[String],
    now: SystemTime,
) -> Result<Bundle, TlsError> {
    let err = |e: rcgen::Error| TlsError(format!("cannot issue the certificate: {e}"));
    let backdate = now - Duration::from_secs(300);
    let (ca_key, ca_cert, ca_not_after) = match (plan, current) {
        (Plan::Keep, Some(b)) => return Ok(b.clone()),
        (Plan::NewCertificate, Some(b)) => (
            KeyPair::from_pem(&b.ca_key).map_err(err)?,
            b.ca_cert.clone(),
            b.ca_not_after,
        ),
        _ => {
            let key = KeyPair::generate().map_err(err)?;
            let mut params = ca_params().map_err(err)?;
            params.not_before = at(backdate);
            params.not_after = at(now + CA_VALIDITY);
            let cert = params.self_signed(&key).map_err(err)?;
            (key, cert.pem(), unix(now + CA_VALIDITY))
        }
    };
    let issuer = Issuer::new(ca_params().map_err(err)?, ca_key);
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(err)?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map(String::as_str).unwrap_or("bulkhead-webhook"),
    );
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.not_before = at(backdate);
    params.not_after = at(now + CERT_VALIDITY);
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    Ok(Bundle {
        cert: format!("{}{}", cert.pem(), ca_cert),
        key: key.serialize_pem(),
        ca_cert,
        ca_key: issuer.key().serialize_pem(),
        not_after: unix(now + CERT_VALIDITY),
        ca_not_after,
        names: names.to_vec(),
    })
}

/// The names of `names` that the certificate (PEM, the first one) does not carry as a DNS or IP
/// subject alternative name. An unreadable certificate misses them all.
pub fn names_missing(cert_pem: &[u8], names: &[String]) -> Vec<String> {
    let sans: Vec<String> = CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .and_then(Result::ok)
        .and_then(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            let san = cert.subject_alternative_name().ok()??;
            Some(
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                        x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                            4 => <[u8; 4]>::try_from(*bytes)
                                .ok()
                                .map(|b| std::net::IpAddr::from(b).to_string()),
                            16 => <[u8; 16]>::try_from(*bytes)
                                .ok()
                                .map(|b| std::net::IpAddr::from(b).to_string()),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect(),
            )
        })
        .unwrap_or_default();
    names
        .iter()
        .filter(|name| {
            let wanted = name
                .parse::<std::net::IpAddr>()
                .map_or_else(|_| (*name).clone(), |ip| ip.to_string());
            !sans.iter().any(|san| san.eq_ignore_ascii_case(&wanted))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certified_key;

    fn names() -> Vec<String> {
        vec!["bulkhead-webhook.bulkhead-system.svc".into(), "127.0.0.1".into()]
    }

    #[test]
    fn a_certificate_names_its_dns_names_and_ip_addresses_as_subject_alternative_names() {
        let now = SystemTime::now();
        let bundle = issue(None, Plan::NewAuthority, &names(), now).expect("issue");
        let cert = bundle.cert.as_bytes();
        assert!(names_missing(cert, &names()).is_empty());
        // An IP address must be an IP SAN (the API server refuses a DNS name that looks like one).
        assert!(names_missing(cert, &["127.0.0.1".into()]).is_empty());
        assert_eq!(
            names_missing(cert, &["127.0.0.2".into(), "bulkhead-webhook.other.svc".into()]),
            ["127.0.0.2", "bulkhead-webhook.other.svc"]
        );
        assert_eq!(names_missing(b"garbage", &["127.0.0.1".into()]), ["127.0.0.1"]);
    }

    #[test]
    fn a_missing_bundle_means_a_new_authority_and_a_fresh_one_is_kept() {
        let now = SystemTime::now();
        assert_eq!(plan(None, &names(), now), Plan::NewAuthority);
        let bundle = issue(None, Plan::NewAuthority, &names(), now).expect("issue");
        assert_eq!(plan(Some(&bundle), &names(), now), Plan::Keep);
        assert!(certified_key(bundle.cert.as_bytes(), bundle.key.as_bytes()).is_ok());
        let (data, annotations) = bundle.to_secret_parts();
        let bytes = data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        assert_eq!(
            Bundle::from_secret_parts(&bytes, &annotations).as_ref(),
            Some(&bundle)
        );
    }

    #[test]
    fn renewal_keeps_the_ca_until_the_ca_itself_expires() {
        let now = SystemTime::now();
        let bundle = issue(None, Plan::NewAuthority, &names(), now).expect("issue");
        let later = now + CERT_VALIDITY - RENEW_BEFORE + Duration::from_secs(1);
        assert_eq!(plan(Some(&bundle), &names(), later), Plan::NewCertificate);
        let renewed = issue(Some(&bundle), Plan::NewCertificate, &names(), later).expect("renew");
        assert_eq!(renewed.ca_cert, bundle.ca_cert, "the caBundle does not change");
        assert_ne!(renewed.cert, bundle.cert);
        assert_eq!(plan(Some(&renewed), &names(), later), Plan::Keep);
        let other = vec!["elsewhere.example".to_owned()];
        assert_eq!(plan(Some(&renewed), &other, later), Plan::NewCertificate);
        let ca_end = now + CA_VALIDITY - CERT_VALIDITY;
        assert_eq!(plan(Some(&renewed), &names(), ca_end), Plan::NewAuthority);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(certified_key(b"junk", b"junk").is_err_and(|e| e.to_string().contains("no certificate")));
        let b = issue(None, Plan::NewAuthority, &names(), SystemTime::now()).expect("issue");
        assert!(
            certified_key(
                b.cert.as_bytes(),
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            )
            .is_err()
        );
    }
}
