//! Matching deployment.yml's node keys to the cluster's members. Flocker's
//! files name nodes by address; ours may name them by node name. A key that
//! is a member's name means that member; otherwise it means the member whose
//! address it is (the IP, `IP:port`, or the host part of the address). A key
//! that fits several members, fits none, or names a member another key
//! already names is refused: pinning must never be a guess.
//!
//! This needs the membership, so it runs where that is known (at deploy);
//! `flocker config check` works offline and does not call it.

use super::error::{ConfigError, KeyPath};
use super::model::Deployment;
use super::names::parse_address_key;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Members listed in an error, at most.
const LISTED_MEMBERS: usize = 10;

/// Maps every pinned application to the name of the member it is pinned to.
/// `members` are (name, address) pairs, the address as a node advertises it
/// (`IP:port`).
pub fn resolve_nodes<N: AsRef<str>, A: AsRef<str>>(
    deployment: &Deployment,
    members: &[(N, A)],
) -> Result<BTreeMap<String, String>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut placed = BTreeMap::new();
    let mut claimed: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, apps) in &deployment.pinned {
        let path = KeyPath::root().key("nodes").key(key);
        let error = |message: String| ConfigError {
            file: String::new(),
            at: None,
            path: path.as_str().to_string(),
            message,
        };
        let found: Vec<&str> = match members.iter().find(|(n, _)| n.as_ref() == key) {
            Some((n, _)) => vec![n.as_ref()],
            None => members
                .iter()
                .filter(|(_, a)| address_matches(key, a.as_ref()))
                .map(|(n, _)| n.as_ref())
                .collect(),
        };
        let member = match found.as_slice() {
            [one] => *one,
            [] => {
                errors.push(error(format!(
                    "no cluster member is named '{key}' or has that address; members: {}",
                    list_members(members)
                )));
                continue;
            }
            several => {
                errors.push(error(format!(
                    "'{key}' is the address of several members ({}); use a node name",
                    several.join(", ")
                )));
                continue;
            }
        };
        if let Some(other) = claimed.insert(member, key) {
            errors.push(error(format!(
                "'{key}' and '{other}' both name member {member}; list its applications under one key"
            )));
            continue;
        }
        for app in apps {
            placed.insert(app.clone(), member.to_string());
        }
    }
    if errors.is_empty() {
        Ok(placed)
    } else {
        Err(errors)
    }
}

/// Whether a deployment key is (part of) a member's address.
fn address_matches(key: &str, address: &str) -> bool {
    let member: Option<SocketAddr> = address.parse().ok();
    if let Some((ip, port)) = parse_address_key(key) {
        let (member_ip, member_port) = match member {
            Some(sa) => (sa.ip(), Some(sa.port())),
            None => match parse_address_key(address) {
                Some((ip, port)) => (ip, port),
                None => return false,
            },
        };
        return ip == member_ip && (port.is_none() || port == member_port);
    }
    let host = match address.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => address,
    };
    key.eq_ignore_ascii_case(host) || key.eq_ignore_ascii_case(address)
}

fn list_members<N: AsRef<str>, A: AsRef<str>>(members: &[(N, A)]) -> String {
    if members.is_empty() {
        return "none".into();
    }
    let mut listed: Vec<String> = members
        .iter()
        .take(LISTED_MEMBERS)
        .map(|(n, a)| format!("{} ({})", n.as_ref(), a.as_ref()))
        .collect();
    if members.len() > LISTED_MEMBERS {
        listed.push(format!("and {} more", members.len() - LISTED_MEMBERS));
    }
    listed.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(pinned: &[(&str, &[&str])]) -> Deployment {
        Deployment {
            pinned: pinned
                .iter()
                .map(|(k, apps)| (k.to_string(), apps.iter().map(|a| a.to_string()).collect()))
                .collect(),
            anywhere: vec![],
        }
    }

    const MEMBERS: &[(&str, &str)] = &[
        ("n1", "10.0.0.1:4523"),
        ("n2", "10.0.0.2:4523"),
        ("n3", "10.0.0.2:4600"),
        ("n4", "[fd00::4]:4523"),
    ];

    #[test]
    fn keys_match_names_then_addresses() {
        let d = deployment(&[
            ("n1", &["web"]),
            ("10.0.0.2:4600", &["db"]),
            ("fd00::4", &["cache"]),
        ]);
        let placed = resolve_nodes(&d, MEMBERS).unwrap();
        assert_eq!(placed["web"], "n1");
        assert_eq!(placed["db"], "n3");
        assert_eq!(placed["cache"], "n4");
        let d = deployment(&[("10.0.0.1", &["web"])]);
        assert_eq!(resolve_nodes(&d, MEMBERS).unwrap()["web"], "n1");
    }

    #[test]
    fn ambiguous_unknown_and_doubly_named_keys_are_refused() {
        let d = deployment(&[("10.0.0.2", &["db"])]);
        let e = resolve_nodes(&d, MEMBERS).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "nodes.\"10.0.0.2\"");
        assert!(
            e[0].message.contains("several members (n2, n3)"),
            "{}",
            e[0]
        );

        let d = deployment(&[("10.0.0.9", &["db"]), ("n7", &["web"])]);
        let e = resolve_nodes(&d, MEMBERS).unwrap_err();
        assert_eq!(e.len(), 2, "every unknown key is reported: {e:?}");
        assert!(e[0]
            .message
            .contains("no cluster member is named '10.0.0.9'"));
        assert!(e[0].message.contains("n1 (10.0.0.1:4523)"));

        let d = deployment(&[("10.0.0.1", &["db"]), ("n1", &["web"])]);
        let e = resolve_nodes(&d, MEMBERS).unwrap_err();
        assert!(e[0].message.contains("both name member n1"), "{}", e[0]);
    }

    #[test]
    fn host_names_match_the_host_part_of_an_address() {
        let members = [("a", "db.example.com:4523")];
        let d = deployment(&[("DB.example.com", &["db"])]);
        assert_eq!(resolve_nodes(&d, &members).unwrap()["db"], "a");
    }
}
