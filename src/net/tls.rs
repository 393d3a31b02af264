//! TLS material and configurations: TLS 1.3 only, ring as the one crypto
//! provider (passed explicitly, never a process-wide default), client
//! certificates required by every node, and the `flocker/1` ALPN so that
//! nothing but flocker speaks to the port. Certificates are checked by our
//! verifiers (`verify`), which add the deny list to webpki's checks.

use super::deny::DenyList;
use super::verify::{ClientVerifier, ServerVerifier};
pub use crate::ca::load_cert;
use crate::ca::{CertsDir, Identity, Role, NODE_SERVER_NAME};
use anyhow::{bail, Context, Result};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;

pub const ALPN: &[u8] = b"flocker/1";

/// A QUIC connection with no traffic for this long is closed; keep-alives
/// every [`KEEP_ALIVE`] keep idle but healthy connections open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// What a node advertises in every handshake, before it knows who the peer
/// is: users' stream and flow-control limits (raised for nodes once their
/// certificate is read; see `endpoint.rs`).
const SERVER_STREAMS: u32 = super::endpoint::USER_STREAMS_PER_CONNECTION;
const SERVER_RECEIVE_WINDOW: u32 = super::endpoint::USER_RECEIVE_WINDOW;
/// Nodes never open streams on connections they accepted, so the calling
/// side accepts none.
const CLIENT_STREAMS: u32 = 0;

/// A certificate and key (or none, to test that nodes refuse it) plus the
/// CA, and the deny list both sides of every handshake consult.
pub struct TlsMaterial {
    pub ca: CertificateDer<'static>,
    pub own: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// Certificates refused at the handshake, as client or server. Shared
    /// by every configuration made from this material (clones share it).
    pub deny: DenyList,
}

impl TlsMaterial {
    /// Loads the CA and the certificate of `role` `name` from a certs directory,
    /// and checks that the certificate says who we think it says.
    pub fn load(certs: &CertsDir, role: Role, name: &str) -> Result<TlsMaterial> {
        let ca = load_cert(&certs.ca_cert())?;
        let cert = load_cert(&certs.cert(role, name))?;
        let key = PrivateKeyDer::from_pem_file(certs.key(role, name))
            .with_context(|| format!("reading key {}", certs.key(role, name).display()))?;
        let identity = Identity::from_der(&cert)?;
        if identity.role != role || identity.name != name {
            bail!(
                "{} is the certificate of {identity}, not of {} '{name}'",
                certs.cert(role, name).display(),
                role.as_str()
            );
        }
        Ok(TlsMaterial {
            ca,
            own: Some((vec![cert], key)),
            deny: DenyList::default(),
        })
    }

    /// The same material consulting `deny` (a node shares one list between
    /// its endpoints).
    pub fn with_deny_list(self, deny: DenyList) -> TlsMaterial {
        TlsMaterial { deny, ..self }
    }

    /// Our own certificate's identity, if we have a readable one.
    pub fn own_identity(&self) -> Option<Identity> {
        let (chain, _) = self.own.as_ref()?;
        Identity::from_der(chain.first()?).ok()
    }

    fn roots(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .context("adding the cluster CA")?;
        Ok(roots)
    }

    /// The server side of a node: only clients with a certificate from our CA.
    pub fn server_config(&self) -> Result<quinn::ServerConfig> {
        let mut tls = self.rustls_server(&[&rustls::version::TLS13])?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(tls).context("TLS config unusable for QUIC")?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport(SERVER_STREAMS, Some(SERVER_RECEIVE_WINDOW)));
        Ok(config)
    }

    /// The node's HTTPS API (`--http-listen`): the same client
    /// certificate check as the QUIC endpoint, so a request without a
    /// certificate from our CA (or with a revoked one) is refused in the
    /// handshake. TLS 1.2 too, which some HTTP tools still speak.
    pub fn https_server_config(&self) -> Result<rustls::ServerConfig> {
        let mut tls = self.rustls_server(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tls)
    }

    /// A rustls server configuration that requires a client certificate
    /// checked by our verifier (the CA chain and the deny list).
    fn rustls_server(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<rustls::ServerConfig> {
        let provider = provider();
        let webpki =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone())
                .build()
                .context("building the client certificate verifier")?;
        let verifier = Arc::new(ClientVerifier::new(webpki, self.deny.clone()));
        let Some((chain, key)) = &self.own else {
            bail!("a node needs its own certificate to serve");
        };
        rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .context("node certificate and key do not match")
    }

    /// The client side, used by nodes for outgoing calls and by `flocker ctl`.
    pub fn client_config(&self) -> Result<quinn::ClientConfig> {
        let mut tls = self.rustls_client(&[&rustls::version::TLS13])?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(tls).context("TLS config unusable for QUIC")?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport(CLIENT_STREAMS, None));
        Ok(config)
    }

    /// A client of a node's HTTPS API (`--http-listen`) with this
    /// identity, verifying the node as the QUIC client does.
    pub fn https_client_config(&self) -> Result<rustls::ClientConfig> {
        let mut tls = self.rustls_client(&[&rustls::version::TLS13])?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tls)
    }

    /// A rustls client configuration that checks the server with our
    /// verifier (the CA chain and the deny list) and presents our
    /// certificate when we have one.
    fn rustls_client(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<rustls::ClientConfig> {
        let provider = provider();
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone())
                .build()
                .context("building the server certificate verifier")?;
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerVerifier::new(
                webpki,
                self.deny.clone(),
            )));
        Ok(match &self.own {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .context("certificate and key do not match")?,
            None => builder.with_no_client_auth(),
        })
    }
}

/// The name a client verifies a node's certificate against.
pub fn server_name() -> &'static str {
    NODE_SERVER_NAME
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport(streams: u32, receive_window: Option<u32>) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT.try_into().expect("idle timeout is in range"),
    ));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_concurrent_bidi_streams(streams.into());
    if let Some(window) = receive_window {
        t.receive_window(window.into());
    }
    t.max_concurrent_uni_streams(0u32.into());
    Arc::new(t)
}
