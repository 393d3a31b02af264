//! Identifiers: the cluster id flocker labels containers with (computed the
//! way `flocker::node::cluster_id` does — BLAKE3 of the CA certificate's DER,
//! first 16 hex digits — so the chaos crate needs no link to flocker), and
//! the request ids clients send.

use anyhow::{bail, Context, Result};
use base64::Engine;
use rand::Rng;
use std::path::Path;

/// The cluster id of the CA in `certs`.
pub fn cluster_id(certs: &Path) -> Result<String> {
    let path = certs.join("ca.crt");
    let pem =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let der = first_pem_block(&pem)
        .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
    Ok(blake3::hash(&der).to_hex()[..16].to_string())
}

fn first_pem_block(pem: &str) -> Result<Vec<u8>> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let Some(start) = pem.find(begin) else {
        bail!("no BEGIN CERTIFICATE line");
    };
    let rest = &pem[start + begin.len()..];
    let Some(stop) = rest.find(end) else {
        bail!("no END CERTIFICATE line");
    };
    let body: String = rest[..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(body)?)
}

/// A request id: the run's seed-derived prefix keeps ids unique across
/// runs; the counter keeps them unique within one.
pub fn request_id(rng: &mut impl Rng, process: u32, n: u64) -> String {
    format!("chaos-{process}-{n}-{:016x}", rng.random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_pem_block() {
        let pem = "x\n-----BEGIN CERTIFICATE-----\naGVs\nbG8=\n-----END CERTIFICATE-----\n";
        assert_eq!(first_pem_block(pem).unwrap(), b"hello");
        assert!(first_pem_block("nothing").is_err());
    }
}
