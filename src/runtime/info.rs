//! What an engine reports about a container: `ContainerId`,
//! `ContainerInfo`, `ContainerState`, and `UnixNanos` for its timestamps.
//!
//! These are observations, never decisions: the agent compares them with
//! what is placed on its node. Timestamps are engine wall-clock times kept
//! as nanoseconds since the epoch, the unit of Docker's event `timeNano`, so
//! that an event and an inspect can be ordered against each other.

use super::{ContainerSpec, Labels};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An engine's id for a container. Every operation also accepts a name here,
/// as Docker does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContainerId(pub String);

impl ContainerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 12-character form Docker prints.
    pub fn short(&self) -> &str {
        self.0.get(..12).unwrap_or(&self.0)
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ContainerId {
    fn from(s: &str) -> Self {
        ContainerId(s.to_string())
    }
}

impl From<String> for ContainerId {
    fn from(s: String) -> Self {
        ContainerId(s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    /// A state this build does not know; kept verbatim for reports.
    Other(String),
}

impl ContainerState {
    pub fn parse(s: &str) -> Self {
        match s {
            "created" => Self::Created,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "restarting" => Self::Restarting,
            "removing" => Self::Removing,
            "exited" => Self::Exited,
            "dead" => Self::Dead,
            other => Self::Other(other.to_string()),
        }
    }

    /// Whether the container's processes may be running: a paused container
    /// still holds its ports and volume, so fencing must treat it as live.
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Running | Self::Paused | Self::Restarting)
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Restarting => "restarting",
            Self::Removing => "removing",
            Self::Exited => "exited",
            Self::Dead => "dead",
            Self::Other(s) => s,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: ContainerId,
    /// Without Docker's leading `/`.
    pub name: String,
    /// The image reference the container was created from.
    pub image: String,
    /// The content id of that image (`sha256:…`).
    pub image_id: String,
    pub labels: Labels,
    pub state: ContainerState,
    /// How the last run ended; `None` while live or before the first run.
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub started_at: Option<UnixNanos>,
    pub finished_at: Option<UnixNanos>,
    /// Docker's own count; stays 0 under restart policy `no`, so the agent
    /// keeps its own count of the restarts it performs.
    pub restart_count: u64,
    /// The engine's last error for this container (e.g. a failed start).
    pub error: Option<String>,
}

impl ContainerInfo {
    /// What an engine reports of a container just created from `spec`
    /// (its image's content id `image_id`), never started.
    pub fn created(id: ContainerId, spec: &ContainerSpec, image_id: String) -> ContainerInfo {
        ContainerInfo {
            id,
            name: spec.name.clone(),
            image: spec.image.clone(),
            image_id,
            labels: spec.labels.clone(),
            state: ContainerState::Created,
            exit_code: None,
            oom_killed: false,
            started_at: None,
            finished_at: None,
            restart_count: 0,
            error: None,
        }
    }
}

/// Nanoseconds since the Unix epoch, as an engine's clock saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnixNanos(pub i64);

impl UnixNanos {
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixNanos(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Parses the RFC 3339 times Docker writes (`2024-05-01T10:00:00.123456789Z`,
    /// or with a `+hh:mm` offset). Docker's "never" (`0001-01-01T00:00:00Z`)
    /// and anything before the epoch read as `None`.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return None;
        }
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = s.get(r)?;
            if part.bytes().all(|c| c.is_ascii_digit()) {
                part.parse().ok()
            } else {
                None
            }
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
            return None;
        }
        let mut rest = &s[19..];
        let mut nanos = 0i64;
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            for (i, c) in frac[..digits].bytes().enumerate() {
                if i < 9 {
                    nanos = nanos * 10 + i64::from(c - b'0');
                }
            }
            for _ in digits..9 {
                nanos *= 10;
            }
            rest = &frac[digits..];
        }
        let offset_secs = match rest {
            "Z" | "z" => 0,
            _ if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') => {
                let sign = if rest.starts_with('-') { -1 } else { 1 };
                let oh: i64 = rest.get(1..3)?.parse().ok()?;
                let om: i64 = rest.get(4..6)?.parse().ok()?;
                sign * (oh * 3600 + om * 60)
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(60) - offset_secs;
        if secs < 0 {
            return None;
        }
        Some(UnixNanos(
            secs.checked_mul(1_000_000_000)?.checked_add(nanos)?,
        ))
    }
}

impl fmt::Display for UnixNanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0))
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            }) {
            Some(s) => f.write_str(&s),
            None => write!(f, "{}ns", self.0),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm), so parsing needs no calendar dependency.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = (if y >= 0 { y } else { y - 399 }) / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_timestamps() {
        assert_eq!(
            UnixNanos::parse_rfc3339("1970-01-01T00:00:00Z"),
            Some(UnixNanos(0))
        );
        assert_eq!(
            UnixNanos::parse_rfc3339("2024-05-01T10:00:00.123456789Z"),
            Some(UnixNanos(1_714_557_600_123_456_789))
        );
        assert_eq!(
            UnixNanos::parse_rfc3339("2024-05-01T12:00:00.5+02:00"),
            Some(UnixNanos(1_714_557_600_500_000_000))
        );
        assert_eq!(UnixNanos::parse_rfc3339("0001-01-01T00:00:00Z"), None);
        assert_eq!(UnixNanos::parse_rfc3339("garbage"), None);
        assert_eq!(UnixNanos::parse_rfc3339("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn displays_as_rfc3339() {
        assert_eq!(
            UnixNanos(1_714_557_600_123_456_789).to_string(),
            "2024-05-01T10:00:00.123456789Z"
        );
    }

    #[test]
    fn states_round_trip() {
        for s in [
            "created",
            "running",
            "paused",
            "restarting",
            "removing",
            "exited",
            "dead",
        ] {
            assert_eq!(ContainerState::parse(s).to_string(), s);
        }
        assert_eq!(
            ContainerState::parse("weird"),
            ContainerState::Other("weird".into())
        );
        assert!(ContainerState::Paused.is_live());
        assert!(!ContainerState::Exited.is_live());
    }
}
