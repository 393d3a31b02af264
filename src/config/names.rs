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

use super::model::{Constraint, ConstraintOp};
use std::net::IpAddr;

pub const MAX_NAME: usize = 63;
/// Longest mountpoint accepted, as Linux's PATH_MAX.
pub const MAX_PATH: usize = 4096;

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
    if value.contains('\0') {
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
    crate::state::validate_label(label, Some(value))?;
    Ok(Constraint {
        label: label.to_string(),
        op,
        value: value.to_string(),
    })
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
