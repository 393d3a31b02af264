//! Our certificate verifiers, one for each side of a handshake. Each runs
//! webpki's checks (the chain to the cluster CA, the validity period, the key
//! usage) and the deny list, and logs every refusal with the peer's name and
//! a reason an operator can act on ("refused user 'ops': certificate expired
//! on 2025-03-01 12:00:00 UTC").
//!
//! The errors handed back to rustls stay the standard ones, so the TLS alert
//! the peer receives says what went wrong (certificate_expired,
//! certificate_revoked, unknown_ca) and the peer can explain it in turn.

use super::deny::DenyList;
use crate::ca::{fingerprint, format_unix, Identity};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Checks clients' certificates on a node's server side.
#[derive(Debug)]
pub struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    deny: DenyList,
}

impl ClientVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, deny: DenyList) -> ClientVerifier {
        ClientVerifier { inner, deny }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        check(&self.deny, end_entity, || {
            self.inner
                .verify_client_cert(end_entity, intermediates, now)
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Checks a node's certificate when we call it (nodes calling out, `ctl`).
#[derive(Debug)]
pub struct ServerVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    deny: DenyList,
}

impl ServerVerifier {
    pub fn new(inner: Arc<dyn ServerCertVerifier>, deny: DenyList) -> ServerVerifier {
        ServerVerifier { inner, deny }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        check(&self.deny, end_entity, || {
            self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            )
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// The deny list first (a revoked certificate is refused whatever else is
/// true of it), then webpki; a refusal is logged with its reason.
fn check<T>(
    deny: &DenyList,
    cert: &CertificateDer<'_>,
    webpki: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    let fp = fingerprint(cert.as_ref());
    let result = if deny.contains(&fp) {
        Err(Error::InvalidCertificate(CertificateError::Revoked))
    } else {
        webpki()
    };
    if let Err(e) = &result {
        tracing::warn!("refused {}: {}", peer_label(cert), reason(e, cert, &fp));
    }
    result
}

/// Who a certificate claims to be, for a log line: `user 'ops'`, or for a
/// certificate flocker did not make, its subject.
pub fn peer_label(cert: &CertificateDer<'_>) -> String {
    if let Ok(identity) = Identity::from_der(cert) {
        return identity.to_string();
    }
    match X509Certificate::from_der(cert.as_ref()) {
        Ok((_, parsed)) => format!("certificate '{}'", parsed.subject()),
        Err(_) => "an unparseable certificate".to_string(),
    }
}

/// Why `error` refused `cert`, in words.
pub fn reason(error: &Error, cert: &CertificateDer<'_>, fp: &str) -> String {
    let validity = X509Certificate::from_der(cert.as_ref()).ok().map(|(_, c)| {
        (
            c.validity().not_before.timestamp(),
            c.validity().not_after.timestamp(),
        )
    });
    match (error, validity) {
        (
            Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ),
            Some((_, not_after)),
        ) => format!("certificate expired on {}", format_unix(not_after)),
        (
            Error::InvalidCertificate(
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
            ),
            Some((not_before, _)),
        ) => format!(
            "certificate not valid before {} (is one of the clocks wrong?)",
            format_unix(not_before)
        ),
        (Error::InvalidCertificate(CertificateError::Revoked), _) => {
            format!("certificate {fp} is revoked")
        }
        (Error::InvalidCertificate(CertificateError::UnknownIssuer), _) => {
            "certificate not issued by this cluster's CA".to_string()
        }
        (other, _) => other.to_string(),
    }
}
