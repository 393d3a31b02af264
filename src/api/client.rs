//! The client side of the API, as `flocker ctl` uses it: one call to one node
//! with a user certificate, failures mapped to "nothing changed" or "unknown".

use super::messages::{ClientEnvelope, ClientReply, ClientRequest};
use super::server::{reply_for_call_error, LEADER_WAIT, WRITE_TIMEOUT};
use crate::ca::{CertsDir, Role};
use crate::net::frame::MAX_CLIENT_FRAME;
use crate::net::tls::TlsMaterial;
use crate::net::{Net, Service};
use anyhow::Result;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long `ctl` waits for a reply: long enough for the node to forward to
/// the leader and for the leader's own write timeout to expire first.
pub const CLIENT_TIMEOUT: Duration =
    Duration::from_secs(WRITE_TIMEOUT.as_secs() + 2 * LEADER_WAIT.as_secs() + 4);

pub struct Client {
    net: Arc<Net>,
    node: SocketAddr,
}

impl Client {
    pub fn new(certs: &CertsDir, user: &str, node: SocketAddr) -> Result<Client> {
        let tls = TlsMaterial::load(certs, Role::User, user)?;
        Ok(Client {
            net: Net::client(&tls, node)?,
            node,
        })
    }

    /// A client with arbitrary TLS material (tests use it to present bad credentials).
    pub fn with_tls(tls: &TlsMaterial, node: SocketAddr) -> Result<Client> {
        Ok(Client {
            net: Net::client(tls, node)?,
            node,
        })
    }

    pub async fn request(&self, request: ClientRequest) -> ClientReply {
        let env = ClientEnvelope::new(request);
        match self
            .net
            .call::<_, ClientReply>(
                self.node,
                None,
                Service::Client,
                &env,
                MAX_CLIENT_FRAME,
                CLIENT_TIMEOUT,
            )
            .await
        {
            Ok(reply) => reply,
            Err(e) => reply_for_call_error(&format!("node {}", self.node), e),
        }
    }

    pub fn net(&self) -> &Arc<Net> {
        &self.net
    }
}

impl Drop for Client {
    /// Closes the connection rather than leave it to the node's idle
    /// timeout: until then it counts against the user's connection limit.
    /// (`ctl` gives the close a moment to leave before the process exits.)
    fn drop(&mut self) {
        if Arc::strong_count(&self.net) == 1 {
            self.net.close();
        }
    }
}
