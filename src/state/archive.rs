//! The last deployed configurations, kept so that operators can see what an
//! earlier version was (`ctl config show --version N`, `ctl config diff`)
//! and go back to one (`ctl rollback`, a deploy of an earlier version through
//! the same plan).
//!
//! Recorded only once every voter runs a build that keeps it (the
//! authorization switch), so that every member holds the same archive.

use super::{Command, Effect, State};
use crate::config::Configuration;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Configurations kept, newest last.
pub const ARCHIVE_CAPACITY: usize = 50;
/// Bytes of configurations kept (as encoded), whatever the count; the
/// current one is always kept.
pub const ARCHIVE_BYTES: usize = 32 << 20;

/// One deployed configuration version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedConfig {
    pub version: u64,
    pub configuration: Configuration,
    /// Its encoded size, counted against [`ARCHIVE_BYTES`].
    pub bytes: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigArchive {
    entries: VecDeque<ArchivedConfig>,
}

impl ConfigArchive {
    /// Keeps `configuration` as `version`, dropping the oldest beyond the
    /// bounds (never the one just kept).
    pub fn keep(&mut self, version: u64, configuration: &Configuration) {
        let bytes = serde_json::to_vec(configuration).map_or(0, |v| v.len());
        self.entries.push_back(ArchivedConfig {
            version,
            configuration: configuration.clone(),
            bytes,
        });
        let mut total: usize = self.entries.iter().map(|e| e.bytes).sum();
        while self.entries.len() > ARCHIVE_CAPACITY
            || (self.entries.len() > 1 && total > ARCHIVE_BYTES)
        {
            if let Some(gone) = self.entries.pop_front() {
                total -= gone.bytes;
            }
        }
    }

    /// The configuration deployed as `version`, if it is still kept.
    pub fn get(&self, version: u64) -> Option<&Configuration> {
        self.entries
            .iter()
            .find(|e| e.version == version)
            .map(|e| &e.configuration)
    }

    /// The versions kept, oldest first.
    pub fn versions(&self) -> Vec<u64> {
        self.entries.iter().map(|e| e.version).collect()
    }
}

impl State {
    /// The configuration deployed as `version`: the current one, or one
    /// the archive still keeps.
    pub fn configuration_at(&self, version: u64) -> Result<&Configuration, String> {
        if version == self.deployed.version {
            return Ok(&self.deployed.config);
        }
        self.configurations.get(version).ok_or_else(|| {
            let kept = self.configurations.versions();
            match (kept.first(), kept.last()) {
                (Some(first), Some(last)) => format!(
                    "configuration version {version} is not kept (versions {first}-{last} are; the current is {})",
                    self.deployed.version
                ),
                _ => format!(
                    "configuration version {version} is not kept (only the current one, {}, is)",
                    self.deployed.version
                ),
            }
        })
    }

    /// Records a newly deployed version (after the switch only).
    pub(super) fn archive_current(&mut self) {
        if self.authorization_from.is_some() {
            let (version, config) = (self.deployed.version, self.deployed.config.clone());
            self.configurations.keep(version, &config);
        }
    }

    pub(super) fn execute_rollback(
        &mut self,
        command: &Command,
        now_ms: u64,
    ) -> Result<Effect, String> {
        let Command::Rollback { to, if_version } = command else {
            return Err(format!("not a rollback: {}", command.kind_name()));
        };
        let configuration = self.configuration_at(*to)?.clone();
        let effect = self.execute_deploy(&configuration, *if_version, now_ms)?;
        Ok(Effect {
            message: format!("rollback to version {to}: {}", effect.message),
            changed: effect.changed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TEST_LEADER;

    fn config(image: &str) -> Configuration {
        let apps = format!("version: 1\napplications:\n  web:\n    image: {image}\n");
        crate::config::parse(
            "version: 1\nnodes:\n  n1: [web]\n",
            "deployment.yml",
            &apps,
            "application.yml",
        )
        .unwrap()
    }

    fn deploy(s: &mut State, index: u64, image: &str) -> Result<String, String> {
        s.apply_signed(
            index,
            &Command::Deploy {
                configuration: config(image),
                if_version: None,
            },
        )
        .result
    }

    #[test]
    fn versions_are_kept_and_a_rollback_deploys_an_earlier_one() {
        let mut s = State::default();
        s.apply_membership([(TEST_LEADER, "127.0.0.1:1")].into_iter());
        s.apply_signed(1, &Command::EnforceAuthorization);
        deploy(&mut s, 2, "busybox:1").unwrap();
        deploy(&mut s, 3, "busybox:2").unwrap();
        assert_eq!(s.deployed.version, 2);
        assert_eq!(s.configuration_at(1).unwrap(), &config("busybox:1"));
        assert!(s.configuration_at(7).unwrap_err().contains("not kept"));
        let back = s
            .apply_signed(
                4,
                &Command::Rollback {
                    to: 1,
                    if_version: Some(2),
                },
            )
            .result
            .unwrap();
        assert!(back.starts_with("rollback to version 1"), "{back}");
        assert_eq!(s.deployed.version, 3);
        assert_eq!(s.deployed.config, config("busybox:1"));
        // --if-version is honoured like a deploy's.
        let stale = s.apply_signed(
            5,
            &Command::Rollback {
                to: 2,
                if_version: Some(2),
            },
        );
        assert!(stale.result.is_err());
        assert_eq!(s.deployed.version, 3);
    }

    #[test]
    fn the_archive_is_bounded() {
        let mut a = ConfigArchive::default();
        for v in 1..=120 {
            a.keep(v, &config(&format!("busybox:{v}")));
        }
        assert_eq!(a.versions().len(), ARCHIVE_CAPACITY);
        assert_eq!(a.versions().last(), Some(&120));
    }
}
