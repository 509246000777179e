//! Why a request never got an answer, in words a user can act on: certificate verification
//! (with the issuer GitLab's certificate names), connection refused, DNS, reset.

use parking_lot::Mutex;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use url::Url;

/// What kind of failure a transport error is.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// The server's certificate was not accepted.
    Certificate(CertificateError),
    ConnectionRefused,
    Dns,
    Reset,
    Other,
}

/// Classifies a transport error by walking its source chain.
pub fn classify(e: &(dyn std::error::Error + 'static)) -> Cause {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(rustls::Error::InvalidCertificate(c)) = err.downcast_ref::<rustls::Error>() {
            return Cause::Certificate(c.clone());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Cause::ConnectionRefused,
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
                    return Cause::Reset;
                }
                _ => {}
            }
            if let Some(inner) = io.get_ref()
                && let Some(rustls::Error::InvalidCertificate(c)) =
                    inner.downcast_ref::<rustls::Error>()
            {
                return Cause::Certificate(c.clone());
            }
        }
        cur = err.source();
    }
    let text = chain(e);
    // hyper and io::Error wrap the TLS error so that the source chain may skip it; its words
    // stay in the messages.
    if let Some(rest) = text.split("invalid peer certificate: ").nth(1) {
        let name = rest.split_whitespace().next().unwrap_or_default();
        return Cause::Certificate(match name {
            n if n.starts_with("UnknownIssuer") => CertificateError::UnknownIssuer,
            n if n.starts_with("NotValidForName") => CertificateError::NotValidForName,
            n if n.starts_with("Expired") => CertificateError::Expired,
            n if n.starts_with("BadSignature") => CertificateError::BadSignature,
            _ => CertificateError::BadEncoding,
        });
    }
    let text = text.to_ascii_lowercase();
    if text.contains("dns error") || text.contains("failed to lookup address") {
        Cause::Dns
    } else if text.contains("connection refused") {
        Cause::ConnectionRefused
    } else {
        Cause::Other
    }
}

/// An error and its sources, one sentence (reqwest's own Display stops at the first).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// The sentence for a cause; `issuer` is what the presented certificate names as its issuer.
pub fn explain(cause: &Cause, url: &Url, issuer: Option<&str>, raw: &str) -> String {
    let host = url.host_str().unwrap_or("?");
    let port = url.port_or_known_default().unwrap_or(443);
    match cause {
        Cause::Certificate(c) => {
            let seen = issuer
                .map(|i| format!(" (issued by \"{i}\")"))
                .unwrap_or_default();
            match c {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                    "TLS certificate verification failed: the certificate {host} presented{seen} is not signed by a CA the operator trusts; put that CA's certificate (PEM) in the connection's caBundleSecretRef or caBundleConfigMapRef"
                ),
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => format!(
                    "TLS certificate verification failed: the certificate {host} presented{seen} is not valid for the name {host}; check spec.url"
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
                    "TLS certificate verification failed: the certificate {host} presented{seen} has expired; GitLab's certificate must be renewed"
                ),
                other => format!(
                    "TLS certificate verification failed for {host}{seen}: {other:?}; check the connection's caBundleSecretRef"
                ),
            }
        }
        Cause::ConnectionRefused => format!(
            "connection refused: nothing listens at {host}:{port}; check spec.url (scheme, host and port) and that GitLab is up"
        ),
        Cause::Dns => format!("DNS lookup of {host} failed; check spec.url and the cluster's DNS"),
        Cause::Reset => format!(
            "the connection to {host}:{port} was reset; a proxy or firewall may be in the way"
        ),
        Cause::Other => raw.to_string(),
    }
}

/// Connects to `url` accepting any certificate, only to read the issuer of the one presented
/// (nothing is sent but a TLS handshake and a plain GET without credentials).
pub async fn presented_issuer(url: &Url) -> Option<String> {
    let seen = Arc::new(Mutex::new(None));
    let verifier = Arc::new(Capture {
        seen: seen.clone(),
        schemes: rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes(),
    });
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .dangerous()
    .with_custom_certificate_verifier(verifier)
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .ok()?;
    let mut probe = url.clone();
    probe.set_path("/");
    probe.set_query(None);
    let _ = client.get(probe).send().await;
    let der = seen.lock().clone()?;
    issuer_common_name(&der)
}

#[derive(Debug)]
struct Capture {
    seen: Arc<Mutex<Option<Vec<u8>>>>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// One DER element: (tag, content, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n]
            .iter()
            .fold(0usize, |a, &x| (a << 8) | usize::from(x));
        b = &b[n..];
        len
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// The issuer's common name (else the whole issuer's printable strings) of a DER certificate.
pub fn issuer_common_name(der: &[u8]) -> Option<String> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let (tag, _, mut rest) = tlv(tbs)?;
    if tag == 0xa0 {
        // [0] version; the serial number follows.
        rest = tlv(rest)?.2;
    }
    let rest = tlv(rest)?.2; // signature algorithm
    let (_, issuer, _) = tlv(rest)?;
    let mut parts = vec![];
    let mut cn = None;
    let mut rdns = issuer;
    while let Some((_, set, next)) = tlv(rdns) {
        let (_, attr, _) = tlv(set)?;
        let (_, oid, value) = tlv(attr)?;
        let (_, text, _) = tlv(value)?;
        let text = String::from_utf8_lossy(text).into_owned();
        if oid == [0x55, 0x04, 0x03] {
            cn = Some(text.clone());
        }
        parts.push(text);
        rdns = next;
    }
    cn.or_else(|| (!parts.is_empty()).then(|| parts.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leaf (CN gitlab.lan) signed by a CA made with
    /// `openssl req -x509 -subj "/O=Example/CN=Example Root CA"`, as DER in base64.
    const LEAF: &str = concat!(
        "MIIBPDCB4gIUCzWMPrS5ALCKTVauqei+B8RzbzgwCgYIKoZIzj0EAwIwLDEQMA4GA1UECgwHRXhh",
        "bXBsZTEYMBYGA1UEAwwPRXhhbXBsZSBSb290IENBMB4XDTI2MTEzMDAyMDM0OFoXDTM2MTEyNzAy",
        "MDM0OFowFTETMBEGA1UEAwwKZ2l0bGFiLmxhbjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABHUl",
        "IPAON8MjPgXjW6m2dbXRiwSegZlBP3Mx3wfMNodW40p6PUsEFjuFkoPFjALUDfQbb/BwL+7onS8a",
        "J6hawUMwCgYIKoZIzj0EAwIDSQAwRgIhAKN6Lm5SuxUVGABobMAMXuO8cGnL2V9x9hG6p97ORd9K",
        "AiEAmTmgeCRMzxzcz8uOSCrrUQ67DdPPJUmYpfOenzDiosk=",
    );

    #[test]
    fn reads_the_issuer_of_a_certificate() {
        use base64_shim::decode;
        let der = decode(LEAF);
        assert_eq!(issuer_common_name(&der).as_deref(), Some("Example Root CA"));
    }

    #[test]
    fn explains_each_cause_with_what_to_do() {
        let url = Url::parse("https://gitlab.example.com").unwrap();
        let m = explain(
            &Cause::Certificate(CertificateError::UnknownIssuer),
            &url,
            Some("Corp CA"),
            "",
        );
        assert!(
            m.contains("issued by \"Corp CA\"") && m.contains("caBundleSecretRef"),
            "{m}"
        );
        let m = explain(&Cause::ConnectionRefused, &url, None, "");
        assert!(
            m.contains("nothing listens at gitlab.example.com:443"),
            "{m}"
        );
        let m = explain(&Cause::Dns, &url, None, "");
        assert!(m.contains("DNS lookup of gitlab.example.com failed"), "{m}");
    }

    /// A few lines of base64 for the test vector (no dependency for one test).
    mod base64_shim {
        pub fn decode(s: &str) -> Vec<u8> {
            let table = |c: u8| match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                _ => 63,
            };
            let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').map(table).collect();
            let mut out = vec![];
            for chunk in bytes.chunks(4) {
                let mut n = 0u32;
                for (i, &v) in chunk.iter().enumerate() {
                    n |= u32::from(v) << (18 - 6 * i);
                }
                for i in 0..chunk.len().saturating_sub(1) {
                    out.push((n >> (16 - 8 * i)) as u8);
                }
            }
            out
        }
    }
}
