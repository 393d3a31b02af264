//! The rules for the names and small strings in a configuration: application
//! names, link aliases, node keys, environment variable names, mountpoints
//! and constraints. Each check returns why a value is refused, for the
//! format walkers to place at a file position.
//!
//! Application names become Docker container names, volume names and link
//! aliases (environment variable prefixes, DNS-ish names), so they are kept
//! to what is safe in all of these: 1-63 lowercase ASCII letters, digits,
//! `-` and `_`, starting with a letter or digit. `_` is allowed because
//! compose files commonly use it; upper case is refused rather than folded,
//! so a name means the same everywhere it appears.
//!
//! Every value that reaches the replicated state has a limit, generous for
//! real configurations but finite, so one file cannot make a Raft entry, the
//! history or a reply frame unreasonably large (issue 11, item 6). The
//! limits, all in bytes or counts (README lists them too):
//!
//! | what | limit | why this number |
//! |---|---|---|
//! | application name | 1-63 of `[a-z0-9_-]` | a DNS label; Docker names |
//! | applications in a file | 10,000 | what a file fits under the YAML reader's 200,000-value budget with a few settings each |
//! | environment variable name | 4 KiB | far beyond any real name; YAML's 1 KiB implicit-key limit is passed by the writer's explicit form |
//! | environment variable value | 64 KiB | half of Linux's 128 KiB limit on one `NAME=value` string |
//! | environment variables per app | 1,000 | |
//! | command arguments | 1,000, each ≤ 64 KiB | each within Linux's 128 KiB per-argument limit |
//! | image reference | 1 KiB (repository 255, tag 128, digest hex ≤ 128) | Docker's own limits |
//! | constraints per app | 64; label key ≤ 63, value ≤ 253 | node labels' rules (`validate_label`) |
//! | mountpoint | 4 KiB, not `/.flocker` or below | PATH_MAX; the fence is mounted there |

use super::model::{Constraint, ConstraintOp};
use std::net::IpAddr;

pub const MAX_NAME: usize = 63;
/// Longest mountpoint accepted, as Linux's PATH_MAX.
pub const MAX_PATH: usize = 4096;
/// Most applications one application file defines.
pub const MAX_APPS: usize = 10_000;
pub const MAX_ENV_NAME: usize = 4 << 10;
pub const MAX_ENV_VALUE: usize = 64 << 10;
pub const MAX_ENV_VARS: usize = 1_000;
pub const MAX_COMMAND_ARGS: usize = 1_000;
pub const MAX_COMMAND_ARG: usize = 64 << 10;
pub const MAX_CONSTRAINTS: usize = 64;
/// Where the agent mounts the fence in every fenceable container
/// (`agent::fence::FENCE_MOUNT` is this): no volume may be mounted there or
/// below.
pub const RESERVED_MOUNT: &str = "/.flocker";
/// Longest label key and value accepted, as in Kubernetes-style labels.
pub const MAX_LABEL_KEY: usize = 63;
pub const MAX_LABEL_VALUE: usize = 253;

pub fn check_app_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        return Ok(());
    }
    let mut why = format!(
        "invalid application name '{}': use 1-{MAX_NAME} lowercase letters, digits, '-' and '_', starting with a letter or digit",
        name.escape_debug()
    );
    let lower = name.to_ascii_lowercase();
    if lower != name && check_app_name(&lower).is_ok() {
        why.push_str(&format!(" (try '{lower}')"));
    }
    Err(why)
}

/// Link aliases: what the linking container sees as environment variable
/// prefixes (`DB_PORT_5432_TCP`), so letters of either case are fine.
pub fn check_alias(alias: &str) -> Result<(), String> {
    let ok = !alias.is_empty()
        && alias.len() <= MAX_NAME
        && alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && alias.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid link alias '{}': use 1-{MAX_NAME} letters, digits, '-' and '_', starting with a letter or digit",
            alias.escape_debug()
        ))
    }
}

/// Deployment node keys: a node name, an IP address (optionally with a
/// port), or a host name, as Flocker's deployment files used addresses.
pub fn check_node_key(key: &str) -> Result<(), String> {
    if crate::ca::validate_name(key).is_ok() || parse_address_key(key).is_some() {
        return Ok(());
    }
    let host_ok = !key.is_empty()
        && key.len() <= 253
        && key.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if host_ok {
        Ok(())
    } else {
        Err(format!(
            "invalid node '{}': give a node name, an IP address or a host name",
            key.escape_debug()
        ))
    }
}

/// An IP address key, with the port when one is given: `10.0.0.1`,
/// `10.0.0.1:4523`, `::1`, `[::1]`, `[::1]:4523`.
pub fn parse_address_key(key: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(sa) = key.parse::<std::net::SocketAddr>() {
        return Some((sa.ip(), Some(sa.port())));
    }
    let bare = key
        .strip_prefix('[')
        .and_then(|k| k.strip_suffix(']'))
        .unwrap_or(key);
    bare.parse::<IpAddr>().ok().map(|ip| (ip, None))
}

pub fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("an environment variable name is empty".into())
    } else if name.len() > MAX_ENV_NAME {
        Err(format!(
            "an environment variable name of {} bytes is longer than the limit of {MAX_ENV_NAME}",
            name.len()
        ))
    } else if name.contains('=') || name.contains('\0') {
        Err(format!(
            "invalid environment variable name '{}': it may not contain '=' or NUL",
            name.escape_debug()
        ))
    } else {
        Ok(())
    }
}

pub fn check_env_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_ENV_VALUE {
        Err(format!(
            "an environment variable value of {} bytes is longer than the limit of {MAX_ENV_VALUE}",
            value.len()
        ))
    } else if value.contains('\0') {
        Err("an environment variable value may not contain NUL".into())
    } else {
        Ok(())
    }
}

/// Mountpoints are absolute, normal paths inside the container.
pub fn check_mountpoint(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "mountpoint '{}' is not an absolute path (it must start with '/')",
            path.escape_debug()
        ));
    }
    if path.len() > MAX_PATH || path.contains('\0') {
        return Err(format!(
            "mountpoint is longer than {MAX_PATH} bytes or contains NUL"
        ));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(format!(
            "mountpoint '{}' may not contain '..'",
            path.escape_debug()
        ));
    }
    if path.split('/').all(str::is_empty) {
        return Err("mountpoint may not be '/'".into());
    }
    let first = path
        .split('/')
        .find(|part| !part.is_empty() && *part != ".");
    if first == RESERVED_MOUNT.strip_prefix('/') {
        return Err(format!(
            "mountpoint '{}' is reserved: the cluster mounts its fence at {RESERVED_MOUNT} in every container",
            path.escape_debug()
        ));
    }
    Ok(())
}

/// A container command's arguments: how many and how long.
pub fn check_command_words(words: &[String]) -> Result<(), String> {
    if words.len() > MAX_COMMAND_ARGS {
        return Err(format!(
            "the command has {} arguments, more than the limit of {MAX_COMMAND_ARGS}",
            words.len()
        ));
    }
    if let Some((i, w)) = words
        .iter()
        .enumerate()
        .find(|(_, w)| w.len() > MAX_COMMAND_ARG)
    {
        return Err(format!(
            "argument {} of the command is {} bytes, longer than the limit of {MAX_COMMAND_ARG}",
            i + 1,
            w.len()
        ));
    }
    Ok(())
}

/// `label=value` or `label!=value`, with node-label rules for both sides.
pub fn parse_constraint(text: &str) -> Result<Constraint, String> {
    let (label, op, value) = if let Some((l, v)) = text.split_once("!=") {
        (l, ConstraintOp::NotEqual, v)
    } else if let Some((l, v)) = text.split_once('=') {
        (l, ConstraintOp::Equal, v)
    } else {
        return Err(format!(
            "constraint '{}' is neither label=value nor label!=value",
            text.escape_debug()
        ));
    };
    let (label, value) = (label.trim(), value.trim());
    if value.is_empty() {
        return Err(format!("constraint '{}' has no value", text.escape_debug()));
    }
    validate_label(label, Some(value))?;
    Ok(Constraint {
        label: label.to_string(),
        op,
        value: value.to_string(),
    })
}

/// Label keys: letters, digits, `.`, `_`, `-`, `/`; values: printable, no spaces.
pub fn validate_label(key: &str, value: Option<&str>) -> Result<(), String> {
    let key_ok = !key.is_empty()
        && key.len() <= MAX_LABEL_KEY
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    if !key_ok {
        return Err(format!(
            "invalid label key '{key}': 1-{MAX_LABEL_KEY} letters, digits, '.', '_', '-' or '/'"
        ));
    }
    if let Some(v) = value {
        if v.len() > MAX_LABEL_VALUE || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "invalid value for label '{key}': at most {MAX_LABEL_VALUE} printable characters without spaces"
            ));
        }
    }
    Ok(())
}

/// Dataset ids are UUIDs in their usual hyphenated form, lower case.
pub fn check_dataset_id(id: &str) -> Result<(), String> {
    let groups: Vec<&str> = id.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let ok = lens == [8, 4, 4, 4, 12]
        && groups.iter().all(|g| {
            g.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "dataset_id '{}' is not a UUID in lower case (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
            id.escape_debug()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        for ok in ["web", "db-1", "my_db", "0day"] {
            assert!(check_app_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-web", "_x", "a.b", "a b", "ümlaut", &"a".repeat(64)] {
            assert!(check_app_name(bad).is_err(), "{bad}");
        }
        assert!(check_app_name("Web").unwrap_err().contains("(try 'web')"));
        assert!(!check_app_name("Bad.Name").unwrap_err().contains("try"));
    }

    #[test]
    fn node_keys_are_names_addresses_or_hosts() {
        for ok in [
            "n1",
            "10.0.0.1",
            "10.0.0.1:4523",
            "::1",
            "[::1]:4523",
            "node-1.example.com",
        ] {
            assert!(check_node_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "-x.com", "x..y", "10.0.0.1:99999"] {
            assert!(check_node_key(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_address_key("[::1]"),
            Some(("::1".parse().unwrap(), None))
        );
    }

    #[test]
    fn mountpoints_must_be_absolute_and_normal() {
        assert!(check_mountpoint("/var/lib/db").is_ok());
        assert!(check_mountpoint("var/lib")
            .unwrap_err()
            .contains("not an absolute path"));
        assert!(check_mountpoint("/a/../b").is_err());
        assert!(check_mountpoint("/").is_err());
        assert!(check_mountpoint("//").is_err());
    }

    #[test]
    fn the_fence_mount_is_reserved() {
        for reserved in [
            "/.flocker",
            "/.flocker/",
            "/.flocker/data",
            "//./.flocker/x",
        ] {
            let why = check_mountpoint(reserved).unwrap_err();
            assert!(why.contains("is reserved"), "{reserved}: {why}");
        }
        for ok in ["/.flockerx", "/data/.flocker", "/flocker"] {
            assert!(check_mountpoint(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn environment_and_command_lengths_are_bounded() {
        assert!(check_env_name(&"A".repeat(MAX_ENV_NAME)).is_ok());
        assert!(check_env_name(&"A".repeat(MAX_ENV_NAME + 1))
            .unwrap_err()
            .contains("longer than the limit"));
        assert!(check_env_value(&"v".repeat(MAX_ENV_VALUE)).is_ok());
        assert!(check_env_value(&"v".repeat(MAX_ENV_VALUE + 1)).is_err());
        let words = vec!["x".to_string(); MAX_COMMAND_ARGS];
        assert!(check_command_words(&words).is_ok());
        let words = vec!["x".to_string(); MAX_COMMAND_ARGS + 1];
        assert!(check_command_words(&words).is_err());
        let words = vec!["sh".to_string(), "y".repeat(MAX_COMMAND_ARG + 1)];
        assert!(check_command_words(&words)
            .unwrap_err()
            .contains("argument 2"));
    }

    #[test]
    fn constraints() {
        let c = parse_constraint("disk=ssd").unwrap();
        assert_eq!(
            (c.label.as_str(), c.op, c.value.as_str()),
            ("disk", ConstraintOp::Equal, "ssd")
        );
        let c = parse_constraint("zone != eu-1").unwrap();
        assert_eq!(
            (c.label.as_str(), c.op, c.value.as_str()),
            ("zone", ConstraintOp::NotEqual, "eu-1")
        );
        assert!(parse_constraint("disk").is_err());
        assert!(parse_constraint("disk=").is_err());
        assert!(parse_constraint("bad key=x").is_err());
        assert!(parse_constraint("k=two words").is_err());
    }

    #[test]
    fn dataset_ids() {
        assert!(check_dataset_id("0a1b2c3d-0000-4000-8000-00000000abcd").is_ok());
        assert!(check_dataset_id("0A1B2C3D-0000-4000-8000-00000000ABCD").is_err());
        assert!(check_dataset_id("not-a-uuid").is_err());
    }
}
