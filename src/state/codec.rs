//! Encodings of the replicated state and commands, old and new.
//!
//! Format 1 (the first release) is postcard, decodable only through the
//! frozen layouts in `v1.rs`; a decoded value is carried over to today's
//! types field by field (through a JSON value, by name), so fields added
//! since take their defaults. Format 2 is JSON: a field added later with
//! `#[serde(default)]` needs no new format. Snapshot state bytes start with
//! their format byte like commands do.

use super::command::{Command, CommandDecodeError};
use super::{v1, State};
use anyhow::{bail, Context};
use serde::{de::DeserializeOwned, Serialize};

/// The state encoding this build writes.
pub const STATE_FORMAT: u8 = 2;
const STATE_FORMAT_V1: u8 = 1;

/// Carries a value from one type to another with the same field names.
fn carry<From: Serialize, To: DeserializeOwned>(value: &From) -> serde_json::Result<To> {
    serde_json::from_value(serde_json::to_value(value)?)
}

/// Decodes a first-release (format 1) command body.
pub(super) fn command_from_v1(body: &[u8]) -> Result<Command, CommandDecodeError> {
    let old: v1::Command = postcard::from_bytes(body).map_err(CommandDecodeError::Undecodable)?;
    carry(&old).map_err(CommandDecodeError::Json)
}

/// The first release's form of `command`, for clusters whose voters do not
/// all read signed commands yet. Kinds it did not have are refused.
pub(super) fn command_to_v1(command: &Command) -> Result<v1::Command, CommandDecodeError> {
    let refuse = |why: String| {
        CommandDecodeError::NotInFormat1(format!(
            "cannot {} in the first release's format ({why}); wait until every voter is upgraded",
            command.kind_name()
        ))
    };
    let old: v1::Command = carry(command).map_err(|e| refuse(e.to_string()))?;
    // A field the first release lacks would be dropped silently: refuse.
    let back: Command = carry(&old).map_err(|e| refuse(e.to_string()))?;
    if &back != command {
        return Err(refuse(
            "it uses settings the first release does not have".into(),
        ));
    }
    Ok(old)
}

impl State {
    /// The state as a snapshot holds it: in the first release's format
    /// while that format holds it exactly (a first-release member that
    /// needs this snapshot can still read it during a rolling upgrade),
    /// else in this build's.
    pub fn encode(&self) -> Vec<u8> {
        if let Some(old) = self.as_first_release() {
            let mut bytes = vec![STATE_FORMAT_V1];
            postcard::to_io(&old, &mut bytes).expect("the state is postcard-serializable");
            return bytes;
        }
        let mut bytes = vec![STATE_FORMAT];
        serde_json::to_writer(&mut bytes, self).expect("the state is JSON-serializable");
        bytes
    }

    /// The first release's form of this state, when it loses nothing.
    fn as_first_release(&self) -> Option<v1::State> {
        // Cheap refusals first: anything of the trust model is new.
        if self.authorization_from.is_some()
            || !self.denied.is_empty()
            || !self.certificates.is_empty()
            || !self.configurations.versions().is_empty()
        {
            return None;
        }
        let old: v1::State = carry(self).ok()?;
        let mut back: State = carry(&old).ok()?;
        back.requests.recount();
        back.history.recount();
        (back == *self).then_some(old)
    }

    /// Reads a snapshot's state in this format or the first release's.
    pub fn decode(bytes: &[u8]) -> anyhow::Result<State> {
        let Some((&format, body)) = bytes.split_first() else {
            bail!("empty state");
        };
        let mut state: State = match format {
            STATE_FORMAT => serde_json::from_slice(body).context("undecodable state")?,
            STATE_FORMAT_V1 => {
                let old: v1::State = postcard::from_bytes(body).context("undecodable state")?;
                carry(&old).context("carrying a format 1 state over")?
            }
            other => bail!("state format {other} is newer than this build reads ({STATE_FORMAT})"),
        };
        state.requests.recount();
        state.history.recount();
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Batch, Proposal};

    /// A first-release command (bytes as that build wrote them) decodes
    /// into today's type, and today's kinds that it lacked are refused.
    #[test]
    fn first_release_commands_still_decode() {
        let old = v1::Command::SetDrained {
            node: "n2".into(),
            drained: true,
        };
        let mut bytes = vec![1u8];
        postcard::to_io(&old, &mut bytes).unwrap();
        let proposal = Proposal {
            request_id: "r".into(),
            author: "admin".into(),
            command: bytes.clone(),
        };
        let decoded = proposal.decode().unwrap();
        assert_eq!(decoded.principal, None);
        assert_eq!(
            decoded.command,
            Command::SetDrained {
                node: "n2".into(),
                drained: true
            }
        );
        // And the unsigned writer produces exactly those bytes.
        let again = Proposal::unsigned("r", "admin", &decoded.command).unwrap();
        assert_eq!(again.command, bytes);
        assert!(Proposal::unsigned("r", "admin", &Command::EnforceAuthorization).is_err());
    }

    /// A request first applied unsigned and retried signed (the client
    /// retried across the upgrade) gets its first outcome, not a refusal.
    #[test]
    fn a_retry_across_the_upgrade_is_the_same_request() {
        use crate::state::Principal;
        let mut s = State::default();
        s.apply_membership([("n1", "127.0.0.1:1")].into_iter());
        let drain = Command::SetDrained {
            node: "n1".into(),
            drained: true,
        };
        let first = Batch {
            proposed_at_ms: 1,
            proposals: vec![Proposal::unsigned("d", "admin", &drain).unwrap()],
        };
        let admin = Principal::User {
            name: "admin".into(),
            access: crate::ca::Access::Admin,
        };
        let retry = |c: &Command| Batch {
            proposed_at_ms: 2,
            proposals: vec![Proposal::signed("d", admin.clone(), Some("n2"), c)],
        };
        assert!(s.apply_batch(1, 0, &first).unwrap()[0].result.is_ok());
        let again = s.apply_batch(2, 0, &retry(&drain)).unwrap().remove(0);
        assert!(again.replayed && again.index == 1, "{again:?}");
        let other = Command::SetDrained {
            node: "n1".into(),
            drained: false,
        };
        let reused = s.apply_batch(3, 0, &retry(&other)).unwrap().remove(0);
        assert!(reused.result.is_err());
        assert!(s.nodes["n1"].drained);
    }

    /// A first-release snapshot state decodes, and encodes in today's format.
    #[test]
    fn first_release_state_still_decodes() {
        let mut s = State::default();
        s.apply_membership([("n1", "127.0.0.1:1")].into_iter());
        let batch = Batch {
            proposed_at_ms: 5,
            proposals: vec![Proposal::unsigned(
                "a",
                "admin",
                &Command::SetLabels {
                    node: "n1".into(),
                    changes: [("zone".to_string(), Some("a".to_string()))].into(),
                },
            )
            .unwrap()],
        };
        s.apply_batch(3, 0, &batch).unwrap();
        let old: v1::State = carry(&s).unwrap();
        let mut bytes = vec![STATE_FORMAT_V1];
        postcard::to_io(&old, &mut bytes).unwrap();
        let back = State::decode(&bytes).unwrap();
        assert_eq!(back, s);
        // Still representable in format 1, so written that way.
        assert_eq!(back.encode(), bytes);
        // Once it holds what format 1 cannot, it is written in format 2.
        let mut newer = back.clone();
        newer.authorization_from = Some(4);
        let encoded = newer.encode();
        assert_eq!(encoded[0], STATE_FORMAT);
        assert_eq!(State::decode(&encoded).unwrap(), newer);
    }

    /// A configuration with a UDP port, which the first release's ports
    /// cannot say, is written in neither format 1 snapshot nor command: a
    /// first-release member would read the port as TCP.
    #[test]
    fn a_udp_port_is_not_written_in_format_1() {
        use crate::config::Protocol;
        let config = |protocol| {
            let app = format!(
                "version: 1\napplications:\n  dns: {{image: x, ports: [{{internal: 53, external: 53, protocol: {}}}]}}\n",
                protocol
            );
            crate::config::parse("version: 1\nanywhere: [dns]\n", "d", &app, "a").unwrap()
        };
        let tcp = config("tcp");
        let udp = config("udp");
        assert_eq!(udp.applications["dns"].ports[0].protocol, Protocol::Udp);

        let mut s = State::default();
        s.apply_membership([("n1", "127.0.0.1:1")].into_iter());
        s.deployed.config = tcp.clone();
        assert_eq!(s.encode()[0], STATE_FORMAT_V1);
        assert_eq!(State::decode(&s.encode()).unwrap(), s);
        s.deployed.config = udp.clone();
        let encoded = s.encode();
        assert_eq!(encoded[0], STATE_FORMAT);
        assert_eq!(State::decode(&encoded).unwrap(), s);

        let deploy = |configuration| Command::Deploy {
            configuration,
            if_version: None,
        };
        let old = Proposal::unsigned("r", "admin", &deploy(tcp)).unwrap();
        assert_eq!(old.decode().unwrap().command, deploy(config("tcp")));
        match Proposal::unsigned("r", "admin", &deploy(udp)) {
            Err(CommandDecodeError::NotInFormat1(why)) => assert!(
                why.contains("cannot deploy in the first release's format"),
                "{why}"
            ),
            other => panic!("a UDP port went into format 1: {other:?}"),
        }
    }

    /// Volume replicas, which the first release cannot keep, are written in
    /// neither format 1 snapshot nor command; a volume with one copy still is.
    #[test]
    fn replicated_volumes_are_not_written_in_format_1() {
        let config = |copies: u32| {
            let app = format!(
                "version: 1\napplications:\n  db: {{image: x, volume: {{mountpoint: /d, replicas: {copies}}}}}\n"
            );
            crate::config::parse("version: 1\nanywhere: [db]\n", "d", &app, "a").unwrap()
        };
        let mut s = State::default();
        s.apply_membership([("n1", "127.0.0.1:1")].into_iter());
        s.deployed.config = config(1);
        assert_eq!(s.encode()[0], STATE_FORMAT_V1);
        s.deployed.config = config(2);
        let encoded = s.encode();
        assert_eq!(encoded[0], STATE_FORMAT);
        assert_eq!(State::decode(&encoded).unwrap(), s);
        let deploy = Command::Deploy {
            configuration: config(2),
            if_version: None,
        };
        assert!(matches!(
            Proposal::unsigned("r", "admin", &deploy),
            Err(CommandDecodeError::NotInFormat1(_))
        ));
    }
}
