//! Configuration errors and where they point: file, line, column and the key
//! path (`applications.web.ports[0].internal`). The parsers collect every
//! error they find into a [`Sink`] rather than stopping at the first, so an
//! operator fixes a file in one pass.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A place in a file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

/// One problem with the configuration.
///
/// Displays as `file:line:col: path: message`; parts that do not apply
/// (no position for an unreadable file, no file for a problem found against
/// the cluster's members) are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigError {
    /// The file's name as the operator gave it; empty when the problem is not
    /// in one file.
    pub file: String,
    pub at: Option<Position>,
    /// Key path from the document root; empty for the document itself.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.file.is_empty() {
            write!(f, "{}:", self.file)?;
            if let Some(at) = self.at {
                write!(f, "{}:{}:", at.line, at.column)?;
            }
            f.write_str(" ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A key path under construction. Cheap enough to clone per node: config
/// files are small and paths short.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath {
    rendered: String,
}

impl KeyPath {
    pub fn root() -> KeyPath {
        KeyPath::default()
    }

    pub fn key(&self, key: &str) -> KeyPath {
        let mut rendered = self.rendered.clone();
        if !rendered.is_empty() {
            rendered.push('.');
        }
        if is_bare(key) {
            rendered.push_str(key);
        } else {
            rendered.push_str(&quote(key));
        }
        KeyPath { rendered }
    }

    pub fn index(&self, i: usize) -> KeyPath {
        KeyPath {
            rendered: format!("{}[{i}]", self.rendered),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.rendered
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered)
    }
}

/// Keys that read unambiguously without quotes in a path.
fn is_bare(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A string in double quotes with anything unprintable escaped, for paths and
/// messages: what the operator wrote, and nothing that could garble a
/// terminal.
pub(crate) fn quote(s: &str) -> String {
    const LONGEST: usize = 80;
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        if i == LONGEST {
            out.push('…');
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Collects the errors of one file.
#[derive(Debug)]
pub(crate) struct Sink {
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl Sink {
    pub fn new(file: &str) -> Sink {
        Sink {
            file: file.to_string(),
            errors: Vec::new(),
        }
    }

    pub fn at(&mut self, at: Position, path: &KeyPath, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            at: Some(at),
            path: path.as_str().to_string(),
            message: message.into(),
        });
    }

    /// A problem with the file as a whole (unreadable, too large).
    pub fn whole(&mut self, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            at: None,
            path: String::new(),
            message: message.into(),
        });
    }
}

/// `(did you mean 'db'?)`, when one candidate is close enough to be a typo
/// (edits counted with transpositions, so `imgae` is one away from `image`).
pub(crate) fn did_you_mean<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    let limit = (wrong.chars().count() / 3).clamp(1, 3);
    let best = candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(wrong, c), c))
        .filter(|(d, _)| *d <= limit)
        .min();
    match best {
        Some((_, c)) => format!(" (did you mean '{c}'?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_quote_keys_that_are_not_plain_words() {
        let p = KeyPath::root().key("nodes").key("10.0.0.1").index(1);
        assert_eq!(p.as_str(), "nodes.\"10.0.0.1\"[1]");
        let p = KeyPath::root()
            .key("applications")
            .key("web")
            .key("ports")
            .index(0)
            .key("internal");
        assert_eq!(p.as_str(), "applications.web.ports[0].internal");
    }

    #[test]
    fn display_leaves_out_what_is_unknown() {
        let mut e = ConfigError {
            file: "d.yml".into(),
            at: Some(Position { line: 4, column: 7 }),
            path: "nodes.n1[1]".into(),
            message: "unknown application 'dbb'".into(),
        };
        assert_eq!(
            e.to_string(),
            "d.yml:4:7: nodes.n1[1]: unknown application 'dbb'"
        );
        e.at = None;
        e.path.clear();
        assert_eq!(e.to_string(), "d.yml: unknown application 'dbb'");
        e.file.clear();
        e.path = "nodes.n9".into();
        assert_eq!(e.to_string(), "nodes.n9: unknown application 'dbb'");
    }

    #[test]
    fn quoting_escapes_control_characters_and_bounds_length() {
        assert_eq!(quote("a\"b\u{1b}"), "\"a\\\"b\\u{1b}\"");
        assert!(quote(&"x".repeat(500)).chars().count() < 90);
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(did_you_mean("dbb", ["db", "web"]), " (did you mean 'db'?)");
        assert_eq!(
            did_you_mean("imge", ["image", "ports"]),
            " (did you mean 'image'?)"
        );
        assert_eq!(did_you_mean("zzzz", ["db", "web"]), "");
    }
}
