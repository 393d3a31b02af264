//! Typed reads from the marked YAML tree, shared by the format walkers: each
//! either returns the value or records an error at the node's position and
//! key path and returns `None`, so a walker carries on and finds the next
//! error too.

use super::error::{did_you_mean, KeyPath, Position, Sink};
use super::size::parse_size;
use super::yaml::{Entry, Node, Value};

pub(crate) fn map<'a>(
    sink: &mut Sink,
    node: &'a Node,
    path: &KeyPath,
    expected: &str,
) -> Option<&'a [Entry]> {
    match &node.value {
        Value::Map(entries) => Some(entries),
        _ => {
            sink.at(
                node.at,
                path,
                format!("expected {expected}, got {}", node.describe()),
            );
            None
        }
    }
}

pub(crate) fn seq<'a>(
    sink: &mut Sink,
    node: &'a Node,
    path: &KeyPath,
    expected: &str,
) -> Option<&'a [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        _ => {
            sink.at(
                node.at,
                path,
                format!("expected {expected}, got {}", node.describe()),
            );
            None
        }
    }
}

pub(crate) fn get<'a>(entries: &'a [Entry], key: &str) -> Option<&'a Entry> {
    entries.iter().find(|e| e.key == key)
}

/// A key that must be present; its absence is reported at the map.
pub(crate) fn require<'a>(
    sink: &mut Sink,
    entries: &'a [Entry],
    map_at: Position,
    path: &KeyPath,
    key: &str,
) -> Option<&'a Entry> {
    let found = get(entries, key);
    if found.is_none() {
        sink.at(map_at, path, format!("missing '{key}'"));
    }
    found
}

/// Refuses every key not in `known`, by name. Keys in `unsupported` are
/// known not to be supported and get their own explanation; the others are
/// probably typos and get a suggestion.
pub(crate) fn check_keys(
    sink: &mut Sink,
    entries: &[Entry],
    path: &KeyPath,
    known: &[&str],
    unsupported: &[(&str, &str)],
) {
    for entry in entries {
        check_key(sink, entry, path, known, unsupported);
    }
}

pub(crate) fn check_key(
    sink: &mut Sink,
    entry: &Entry,
    path: &KeyPath,
    known: &[&str],
    unsupported: &[(&str, &str)],
) {
    if known.contains(&entry.key.as_str()) {
        return;
    }
    let at = path.key(&entry.key);
    if let Some((_, why)) = unsupported.iter().find(|(k, _)| *k == entry.key) {
        sink.at(
            entry.key_at,
            &at,
            format!("'{}' is not supported: {why}", entry.key),
        );
        return;
    }
    let hint = did_you_mean(&entry.key, known.iter().copied());
    let message = if hint.is_empty() {
        format!(
            "unknown key '{}'; expected one of: {}",
            entry.key,
            known.join(", ")
        )
    } else {
        format!("unknown key '{}'{hint}", entry.key)
    };
    sink.at(entry.key_at, &at, message);
}

/// Any scalar but null, as text; `what` names the expected value.
pub(crate) fn text(sink: &mut Sink, node: &Node, path: &KeyPath, what: &str) -> Option<String> {
    match node.scalar() {
        Some(s) if !s.is_null() => Some(s.text.clone()),
        _ => {
            sink.at(
                node.at,
                path,
                format!("expected {what}, got {}", node.describe()),
            );
            None
        }
    }
}

/// A plain integer in `min..=max`; a quoted number is refused, as a string is
/// in Flocker's schema.
pub(crate) fn uint(
    sink: &mut Sink,
    node: &Node,
    path: &KeyPath,
    min: u64,
    max: u64,
    what: &str,
) -> Option<u64> {
    let value = node
        .scalar()
        .and_then(|s| s.as_int())
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| (min..=max).contains(n));
    if value.is_none() {
        let mut message = format!("expected {what}, got {}", node.describe());
        if node
            .scalar()
            .is_some_and(|s| !s.plain && s.text.trim().parse::<u64>().is_ok())
        {
            message.push_str(" (write the number without quotes)");
        }
        sink.at(node.at, path, message);
    }
    value
}

/// `true` or `false` (YAML 1.2 core schema, unquoted).
pub(crate) fn boolean(sink: &mut Sink, node: &Node, path: &KeyPath) -> Option<bool> {
    match node.scalar() {
        Some(s) if s.is_bool() => Some(s.text.eq_ignore_ascii_case("true")),
        _ => {
            let mut message = format!("expected true or false, got {}", node.describe());
            if node
                .scalar()
                .is_some_and(|s| matches!(s.text.to_ascii_lowercase().as_str(), "true" | "false"))
            {
                message.push_str(" (write it without quotes)");
            }
            sink.at(node.at, path, message);
            None
        }
    }
}

pub(crate) fn port(sink: &mut Sink, node: &Node, path: &KeyPath) -> Option<u16> {
    uint(sink, node, path, 1, 65535, "a port number 1-65535").map(|p| p as u16)
}

/// Bytes as a plain integer, or a size with a unit (see `size`).
pub(crate) fn size(sink: &mut Sink, node: &Node, path: &KeyPath) -> Option<u64> {
    let parsed = match node.scalar() {
        Some(s) if !s.is_null() => parse_size(&s.text),
        _ => Err("expected bytes or a size like 500M or 2.5G".into()),
    };
    match parsed {
        Ok(bytes) => Some(bytes),
        Err(why) => {
            sink.at(node.at, path, format!("{why}, got {}", node.describe()));
            None
        }
    }
}

/// Records `result`'s error at the node, passing its value through.
pub(crate) fn check<T>(
    sink: &mut Sink,
    node: &Node,
    path: &KeyPath,
    result: Result<T, String>,
) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(why) => {
            sink.at(node.at, path, why);
            None
        }
    }
}
