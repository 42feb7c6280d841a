//! TLS to the Proxmox API, always verified: either the certificate is pinned by its SHA-256
//! fingerprint (what the Proxmox UI shows under Certificates, and what Proxmox's own clients
//! pin), or it must chain to the given CA, by default the cluster's `/etc/pve/pve-root-ca.pem`
//! that signs every node's certificate.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::config::TlsTrust;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Setup(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The rustls config for the API client.
pub fn client_config(trust: &TlsTrust) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let config = match trust {
        TlsTrust::Fingerprint(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert {
                sha256: *fp,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        TlsTrust::CaFile(path) => {
            let shown = path.display().to_string();
            let ca_err = |reason: String| TlsError::CaFile {
                path: shown.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| ca_err(format!("bad PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ca_err(format!("unusable certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(ca_err("holds no certificate".into()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(config)
}

/// SHA-256 of a DER certificate.
pub fn fingerprint(cert: &[u8]) -> [u8; 32] {
    Sha256::digest(cert).into()
}

/// Accepts exactly the certificate with the pinned hash; the handshake signatures are still
/// checked against its key, so only the holder of that certificate's key gets through.
#[derive(Debug)]
struct PinnedCert {
    sha256: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity.as_ref()) == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the API's certificate has fingerprint {}, not the pinned one",
                hex_colons(&fingerprint(end_entity.as_ref()))
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `AA:BB:...`, as Proxmox shows fingerprints.
pub fn hex_colons(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_text_round_trips() {
        let fp = fingerprint(b"not really a certificate");
        let text = hex_colons(&fp);
        assert_eq!(text.len(), 32 * 3 - 1);
        assert_eq!(super::super::config::parse_fingerprint(&text).unwrap(), fp);
    }

    #[test]
    fn pinned_verifier_takes_only_its_certificate() {
        let cert = CertificateDer::from(b"certificate bytes".to_vec());
        let other = CertificateDer::from(b"another certificate".to_vec());
        let v = PinnedCert {
            sha256: fingerprint(cert.as_ref()),
            algorithms: provider().signature_verification_algorithms,
        };
        let name = ServerName::try_from("127.0.0.1").unwrap();
        assert!(
            v.verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
                .is_ok()
        );
        let e = v
            .verify_server_cert(&other, &[], &name, &[], UnixTime::now())
            .unwrap_err();
        assert!(e.to_string().contains("not the pinned one"), "{e}");
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "no certificates here\n").unwrap();
        let e = client_config(&TlsTrust::CaFile(path.clone()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ca.pem") && e.contains("no certificate"), "{e}");
        let e = client_config(&TlsTrust::CaFile(dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
