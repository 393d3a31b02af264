//! The replicated half of the trust model: the deny list of certificates
//! (revoked by an admin, or a removed member's), the certificate each node
//! runs with, and the switch that turns on apply-time authorization.
//!
//! The deny list is what every node's TLS layer refuses at the handshake;
//! it lives here so that it is the same on every node from the same index.
//! An entry is dropped once the certificate would have expired anyway,
//! which bounds the list by the certificates still valid.

use super::{Command, Effect, State};
use serde::{Deserialize, Serialize};

/// A certificate nobody may use any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// Whose it was, as the revoker knew it (`node n4`, `user alice`).
    pub subject: String,
    pub reason: String,
    /// The leader's clock when it was revoked, ms since the Unix epoch.
    pub at_ms: u64,
    /// Seconds since the Unix epoch after which the certificate is expired
    /// anyway and the entry is dropped; `None` keeps it.
    pub not_after: Option<i64>,
}

/// A member node's certificate as it reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    pub fingerprint: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

/// Most certificates on the deny list at once: revocations past it are
/// refused (each entry is dropped when its certificate expires).
pub const MAX_DENIED: usize = 10_000;

/// Longest revocation reason or subject kept.
const MAX_TEXT: usize = 200;

impl State {
    pub(super) fn execute_trust(
        &mut self,
        command: &Command,
        index: u64,
        now_ms: u64,
    ) -> Result<Effect, String> {
        match command {
            Command::EnforceAuthorization => {
                if self.authorization_from.is_some() {
                    return Ok(Effect {
                        message: "authorization already enforced".into(),
                        changed: false,
                    });
                }
                self.authorization_from = Some(index);
                Ok(Effect::changed(
                    "authorization enforced: unsigned commands are refused from now on".into(),
                ))
            }
            Command::NodeCertificate {
                node,
                fingerprint,
                not_after,
            } => self.execute_node_certificate(node, fingerprint, *not_after),
            Command::Revoke {
                fingerprint,
                subject,
                reason,
                not_after,
            } => self.execute_revoke(fingerprint, subject, reason, *not_after, now_ms),
            other => Err(format!("not a trust command: {}", other.kind_name())),
        }
    }

    fn execute_node_certificate(
        &mut self,
        node: &str,
        fingerprint: &str,
        not_after: i64,
    ) -> Result<Effect, String> {
        check_fingerprint(fingerprint)?;
        if !self.nodes.contains_key(node) {
            return Err(format!("no member node named '{node}'"));
        }
        let record = CertificateRecord {
            fingerprint: fingerprint.to_string(),
            not_after,
        };
        let changed = self.certificates.get(node) != Some(&record);
        self.certificates.insert(node.to_string(), record);
        Ok(Effect {
            message: format!("{node} runs with certificate {}", short(fingerprint)),
            changed,
        })
    }

    fn execute_revoke(
        &mut self,
        fingerprint: &str,
        subject: &str,
        reason: &str,
        not_after: Option<i64>,
        now_ms: u64,
    ) -> Result<Effect, String> {
        check_fingerprint(fingerprint)?;
        if self.denied.contains_key(fingerprint) {
            return Ok(Effect {
                message: format!("certificate {} was already revoked", short(fingerprint)),
                changed: false,
            });
        }
        if self.denied.len() >= MAX_DENIED {
            return Err(format!(
                "the deny list holds {MAX_DENIED} certificates already; entries leave it as their certificates expire"
            ));
        }
        self.denied.insert(
            fingerprint.to_string(),
            Denial {
                subject: clip(subject),
                reason: clip(reason),
                at_ms: now_ms,
                not_after,
            },
        );
        Ok(Effect::changed(format!(
            "revoked certificate {} ({}): {}",
            short(fingerprint),
            clip(subject),
            clip(reason)
        )))
    }

    /// Drops deny-list entries whose certificates have expired by the
    /// leader's clock `now_ms` (a committed value).
    pub(super) fn forget_expired_denials(&mut self, now_ms: u64) {
        let now_secs = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        self.denied
            .retain(|_, d| d.not_after.is_none_or(|end| end >= now_secs));
    }

    /// Whether the certificate with this fingerprint is on the deny list.
    pub fn is_denied(&self, fingerprint: &str) -> bool {
        self.denied.contains_key(fingerprint)
    }
}

fn check_fingerprint(fingerprint: &str) -> Result<(), String> {
    if fingerprint.len() == 64
        && fingerprint
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err("a certificate fingerprint is 64 lowercase hex digits (SHA-256)".into())
    }
}

/// The first 16 hex digits, enough to tell certificates apart in messages.
pub fn short(fingerprint: &str) -> &str {
    fingerprint.get(..16).unwrap_or(fingerprint)
}

fn clip(text: &str) -> String {
    let mut text = text.to_string();
    super::requests::clip_text(&mut text, MAX_TEXT);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{HistoryEntry, RequestWindow, REQUEST_WINDOW_BYTES};

    fn revoke(fp: &str, not_after: Option<i64>) -> Command {
        Command::Revoke {
            fingerprint: fp.into(),
            subject: "user eve".into(),
            reason: "left the company".into(),
            not_after,
        }
    }

    #[test]
    fn revocations_last_until_the_certificate_would_expire() {
        let mut s = State::default();
        let fp = "ab".repeat(32);
        assert!(s.apply_signed(1, &revoke(&fp, Some(100))).result.is_ok());
        assert!(s.is_denied(&fp));
        // Applied again: nothing new.
        assert!(s.apply_signed(2, &revoke(&fp, Some(100))).result.is_ok());
        assert_eq!(s.denied.len(), 1);
        // A bad fingerprint is refused.
        assert!(s.apply_signed(3, &revoke("xyz", None)).result.is_err());
        // An entry at 101 s by the leader's clock drops the expired denial.
        s.apply_signed(101, &revoke(&"cd".repeat(32), None));
        assert!(!s.is_denied(&fp));
        assert!(s.is_denied(&"cd".repeat(32)));
    }

    #[test]
    fn history_is_bounded_in_bytes_and_paged() {
        let mut h = crate::state::History::default();
        for i in 0..200u64 {
            h.record(HistoryEntry {
                index: i,
                proposed_at_ms: 0,
                author: "admin".into(),
                request_id: format!("r{i}"),
                summary: "s".repeat(100_000),
                via: None,
            });
        }
        let kept: usize = h.entries().map(HistoryEntry::bytes).sum();
        assert!(kept <= crate::state::HISTORY_BYTES, "{kept}");
        assert!(h.entries().all(|e| e.summary.len() <= 2100));
        let page = h.page(10, Some(150), usize::MAX);
        assert_eq!(page.len(), 10);
        assert_eq!(page.last().unwrap().index, 149);
        assert_eq!(page.first().unwrap().index, 140);
        let small = h.page(1000, None, 10_000);
        assert!(small.iter().map(HistoryEntry::bytes).sum::<usize>() <= 10_000);
        assert_eq!(small.last().unwrap().index, 199, "the newest first");
    }

    #[test]
    fn the_request_window_is_bounded_in_bytes() {
        let mut w = RequestWindow::default();
        for i in 0..20_000u32 {
            let outcome = crate::state::Outcome::done(u64::from(i), "x".repeat(50_000));
            w.remember(format!("{i:0>100}"), [0; 32], outcome);
        }
        assert!(w.bytes() <= REQUEST_WINDOW_BYTES, "{}", w.bytes());
        assert!(
            w.get(&format!("{:0>100}", 19_999)).is_some(),
            "the newest stays"
        );
        assert!(w.get(&format!("{:0>100}", 0)).is_none(), "the oldest went");
    }
}
