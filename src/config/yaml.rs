//! A YAML document as a small tree whose every node and key carries its
//! line and column, built from `saphyr-parser`'s event stream.
//!
//! The tree keeps scalars as text and remembers whether they were plain
//! (unquoted): the format walkers decide what a scalar means, so `80` and
//! `"80"` can be told apart and no YAML 1.1 guessing (`no` → false) happens.
//! This is also where the things no format allows are refused: duplicate
//! keys, non-scalar keys, merge keys, custom tags, more than one document.
//! Depth, node count and the bytes of text the tree holds are bounded, each
//! counting what alias expansion produces, and a panic inside the parser is
//! turned into an error, so no input can take the process down.
//! It does not know any Flocker key; see the format modules for that.

use super::error::{quote, KeyPath, Position, Sink};
use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};
use std::collections::HashMap;

/// Deepest nesting accepted, counting alias expansions. Flocker's formats
/// need five levels.
pub(crate) const MAX_DEPTH: usize = 64;
/// Most nodes in one document, counting alias expansions (which is what
/// stops "billion laughs" documents).
pub(crate) const MAX_NODES: usize = 200_000;
/// Most bytes of text (scalars and keys) in one document, counting every
/// copy an alias makes. The node count alone let a 1 MB file of aliases to
/// one long string expand to 1.3 GB. Four times the largest file read
/// (`MAX_CONFIG_BYTES`), which is also the largest frame a configuration
/// travels in: a document expanding beyond that could never be deployed,
/// so nothing real is refused and the tree stays within a few tens of MiB.
pub(crate) const MAX_TEXT_BYTES: usize = 4 * super::MAX_CONFIG_BYTES;

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub at: Position,
    pub value: Value,
    /// Nodes in this subtree, itself included.
    size: usize,
    /// Bytes of text in this subtree: scalars and map keys.
    bytes: usize,
    /// Levels in this subtree: 1 for a scalar.
    height: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone)]
pub(crate) struct Scalar {
    pub text: String,
    /// Written without quotes, block style or a `!!str` tag.
    pub plain: bool,
}

/// A mapping entry; keys are always scalars and distinct within a map.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    pub key_at: Position,
    pub value: Node,
}

impl Scalar {
    /// YAML 1.2 core schema null.
    pub fn is_null(&self) -> bool {
        self.plain && matches!(self.text.as_str(), "" | "~" | "null" | "Null" | "NULL")
    }

    /// YAML 1.2 core schema booleans only; `yes`/`no` are strings.
    pub fn is_bool(&self) -> bool {
        self.plain
            && matches!(
                self.text.as_str(),
                "true" | "True" | "TRUE" | "false" | "False" | "FALSE"
            )
    }

    /// A plain decimal integer, when it is one.
    pub fn as_int(&self) -> Option<i128> {
        if !self.plain {
            return None;
        }
        let t = self.text.as_str();
        let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
        if digits.is_empty() || digits.len() > 30 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    }
}

impl Node {
    pub fn scalar(&self) -> Option<&Scalar> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        self.scalar().is_some_and(Scalar::is_null)
    }

    /// What the operator wrote, for "expected X, got Y" messages.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a map".into(),
            Value::Scalar(s) if s.is_null() => "nothing".into(),
            Value::Scalar(s) if s.plain => quote(&s.text),
            Value::Scalar(s) => format!("the string {}", quote(&s.text)),
        }
    }
}

/// Parses one YAML document. `None` means there is nothing usable (syntax
/// error, empty file, a limit exceeded); the reasons are in `sink`.
pub(crate) fn parse(text: &str, sink: &mut Sink) -> Option<Node> {
    let before = sink.errors.len();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut builder = Builder {
            sink: &mut *sink,
            frames: Vec::new(),
            anchors: HashMap::new(),
            nodes: 0,
            bytes: 0,
            documents: 0,
            root: None,
        };
        builder.run(text);
        builder.root
    }));
    match outcome {
        // Errors that did not stop the build (a duplicate key) leave a usable
        // tree, so the walkers can still report everything else.
        Ok(root) => {
            if root.is_none() && sink.errors.len() == before {
                sink.at(
                    Position { line: 1, column: 1 },
                    &KeyPath::root(),
                    "the file is empty",
                );
            }
            root
        }
        Err(_) => {
            sink.whole("the YAML parser failed on this input; please report it");
            None
        }
    }
}

struct Builder<'s> {
    sink: &'s mut Sink,
    frames: Vec<Frame>,
    /// Anchored nodes by the parser's anchor id.
    anchors: HashMap<usize, Node>,
    nodes: usize,
    /// Bytes of text built so far, as `Node::bytes` counts them.
    bytes: usize,
    documents: usize,
    root: Option<Node>,
}

enum Frame {
    Seq {
        at: Position,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        at: Position,
        anchor: usize,
        entries: Vec<Entry>,
        key: PendingKey,
    },
}

enum PendingKey {
    /// The next node is a key.
    None,
    /// The next node is this key's value.
    Key(String, Position),
    /// The next node is the value of a refused key: drop it.
    Skip,
}

/// Why building stopped early.
struct Stop;

impl Builder<'_> {
    fn run(&mut self, text: &str) {
        let mut parser = Parser::new_from_str(text);
        while let Some(next) = parser.next_event() {
            let step = match next {
                Ok((event, span)) => self.on_event(event, span),
                Err(e) => {
                    let m = e.marker();
                    let at = position(m.line(), m.col());
                    self.sink.at(
                        at,
                        &KeyPath::root(),
                        format!("YAML syntax error: {}", e.info()),
                    );
                    Err(Stop)
                }
            };
            if step.is_err() {
                self.root = None;
                return;
            }
        }
    }

    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<(), Stop> {
        let at = position(span.start.line(), span.start.col());
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => Ok(()),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return self.stop(
                        at,
                        "a second YAML document starts here; a config file holds one document",
                    );
                }
                Ok(())
            }
            Event::Scalar(text, style, anchor, tag) => {
                let forced_string = self.check_tag(tag.as_deref(), at)?;
                let plain = style == ScalarStyle::Plain && !forced_string;
                self.count(1, text.len(), at)?;
                let node = Node {
                    at,
                    bytes: text.len(),
                    value: Value::Scalar(Scalar {
                        text: text.into_owned(),
                        plain,
                    }),
                    size: 1,
                    height: 1,
                };
                self.complete(node, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_tag(tag.as_deref(), at)?;
                self.open(at)?;
                self.frames.push(Frame::Seq {
                    at,
                    anchor,
                    items: Vec::new(),
                });
                Ok(())
            }
            Event::MappingStart(anchor, tag) => {
                self.check_tag(tag.as_deref(), at)?;
                self.open(at)?;
                self.frames.push(Frame::Map {
                    at,
                    anchor,
                    entries: Vec::new(),
                    key: PendingKey::None,
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.frames.pop() {
                    Some(Frame::Seq { at, anchor, items }) => {
                        let size = 1 + items.iter().map(|n| n.size).sum::<usize>();
                        let bytes = items.iter().map(|n| n.bytes).sum::<usize>();
                        let height = 1 + items.iter().map(|n| n.height).max().unwrap_or(0);
                        let value = Value::Seq(items);
                        (
                            Node {
                                at,
                                value,
                                size,
                                bytes,
                                height,
                            },
                            anchor,
                        )
                    }
                    Some(Frame::Map {
                        at,
                        anchor,
                        entries,
                        ..
                    }) => {
                        let size = 1 + entries.iter().map(|e| 1 + e.value.size).sum::<usize>();
                        let bytes = entries
                            .iter()
                            .map(|e| e.key.len() + e.value.bytes)
                            .sum::<usize>();
                        let height = 1 + entries.iter().map(|e| e.value.height).max().unwrap_or(0);
                        let value = Value::Map(entries);
                        (
                            Node {
                                at,
                                value,
                                size,
                                bytes,
                                height,
                            },
                            anchor,
                        )
                    }
                    None => return self.stop(at, "unbalanced YAML collection"),
                };
                self.complete(node, anchor)
            }
            Event::Alias(id) => {
                let Some((size, bytes, height)) =
                    self.anchors.get(&id).map(|n| (n.size, n.bytes, n.height))
                else {
                    return self.stop(at, "alias to an unknown anchor");
                };
                if self.frames.len() + height > MAX_DEPTH {
                    return self.stop(
                        at,
                        format!("this alias nests the document deeper than {MAX_DEPTH} levels"),
                    );
                }
                // Charged before the copy is made: a refused alias costs nothing.
                self.count(size, bytes, at)?;
                let Some(mut node) = self.anchors.get(&id).cloned() else {
                    return self.stop(at, "alias to an unknown anchor");
                };
                // Errors inside the copy point at the anchored original; the
                // copy itself is where the alias is.
                node.at = at;
                self.complete(node, 0)
            }
        }
    }

    /// Whether a tag forces a scalar to be a string; any tag outside YAML's
    /// core schema is refused, since no Flocker format gives one a meaning.
    fn check_tag(&mut self, tag: Option<&Tag>, at: Position) -> Result<bool, Stop> {
        let Some(tag) = tag else { return Ok(false) };
        if tag.is_yaml_core_schema() {
            return Ok(tag.suffix == "str");
        }
        if tag.handle == "!" && tag.suffix.is_empty() {
            return Ok(true);
        }
        let message = format!("YAML tag {tag} is not supported");
        let path = self.path();
        self.sink.at(at, &path, message);
        Err(Stop)
    }

    fn open(&mut self, at: Position) -> Result<(), Stop> {
        self.count(1, 0, at)?;
        if self.frames.len() >= MAX_DEPTH {
            return self.stop(
                at,
                format!("the document nests deeper than {MAX_DEPTH} levels"),
            );
        }
        Ok(())
    }

    /// Charges `nodes` values and `bytes` of text against the budgets.
    fn count(&mut self, nodes: usize, bytes: usize, at: Position) -> Result<(), Stop> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES {
            return self.stop(
                at,
                format!("the document has more than {MAX_NODES} values (counting aliases)"),
            );
        }
        if self.bytes > MAX_TEXT_BYTES {
            return self.stop(
                at,
                format!(
                    "the document expands to more than {} MiB of text (counting every copy an alias makes)",
                    MAX_TEXT_BYTES >> 20
                ),
            );
        }
        Ok(())
    }

    fn stop(&mut self, at: Position, message: impl Into<String>) -> Result<(), Stop> {
        let path = self.path();
        self.sink.at(at, &path, message);
        Err(Stop)
    }

    /// Places a finished node in its parent.
    fn complete(&mut self, node: Node, anchor: usize) -> Result<(), Stop> {
        if anchor != 0 {
            // The kept copy counts too, or nested anchors could hold many
            // copies of one large subtree.
            self.count(node.size, node.bytes, node.at)?;
            self.anchors.insert(anchor, node.clone());
        }
        let path = self.path();
        match self.frames.last_mut() {
            None => {
                self.root = Some(node);
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match std::mem::replace(key, PendingKey::None)
            {
                PendingKey::Key(k, key_at) => entries.push(Entry {
                    key: k,
                    key_at,
                    value: node,
                }),
                PendingKey::Skip => {}
                PendingKey::None => {
                    *key = match &node.value {
                        Value::Scalar(s) if s.is_null() => {
                            self.sink.at(node.at, &path, "a key is empty");
                            PendingKey::Skip
                        }
                        Value::Scalar(s) if s.plain && s.text == "<<" => {
                            self.sink.at(
                                node.at,
                                &path,
                                "YAML merge keys ('<<') are not supported: write the keys out",
                            );
                            PendingKey::Skip
                        }
                        Value::Scalar(s) => {
                            if let Some(first) = entries.iter().find(|e| e.key == s.text) {
                                let message = format!(
                                    "duplicate key '{}' (first at line {})",
                                    s.text, first.key_at.line
                                );
                                self.sink.at(node.at, &path.key(&s.text), message);
                                PendingKey::Skip
                            } else {
                                PendingKey::Key(s.text.clone(), node.at)
                            }
                        }
                        _ => {
                            let message = format!("a key must be a name, not {}", node.describe());
                            self.sink.at(node.at, &path, message);
                            PendingKey::Skip
                        }
                    };
                }
            },
        }
        Ok(())
    }

    /// The key path of the node being built.
    fn path(&self) -> KeyPath {
        let mut path = KeyPath::root();
        for frame in &self.frames {
            path = match frame {
                Frame::Seq { items, .. } => path.index(items.len()),
                Frame::Map {
                    key: PendingKey::Key(k, _),
                    ..
                } => path.key(k),
                Frame::Map { .. } => path,
            };
        }
        path
    }
}

/// saphyr's markers: 1-based lines, 0-based character columns.
fn position(line: usize, col: usize) -> Position {
    Position {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(col.saturating_add(1)).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> (Option<Node>, Vec<String>) {
        let mut sink = Sink::new("t.yml");
        let node = parse(text, &mut sink);
        (node, sink.errors.iter().map(|e| e.to_string()).collect())
    }

    fn map(node: &Node) -> &[Entry] {
        match &node.value {
            Value::Map(e) => e,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn keys_and_values_carry_positions() {
        let (node, errors) = tree("version: 1\n\"apps\":\n  web: 'x'\n");
        assert!(errors.is_empty(), "{errors:?}");
        let root = node.unwrap();
        let entries = map(&root);
        assert_eq!(entries[0].key, "version");
        assert_eq!(entries[0].key_at, Position { line: 1, column: 1 });
        assert_eq!(
            entries[0].value.at,
            Position {
                line: 1,
                column: 10
            }
        );
        assert_eq!(entries[1].key, "apps");
        let web = &map(&entries[1].value)[0];
        assert_eq!(web.key_at, Position { line: 3, column: 3 });
        let s = web.value.scalar().unwrap();
        assert_eq!((s.text.as_str(), s.plain), ("x", false));
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let (node, errors) = tree("a: [1, 2\nb: c\n");
        assert!(node.is_none());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("t.yml:2:"), "{errors:?}");
        assert!(errors[0].contains("YAML syntax error"), "{errors:?}");
    }

    #[test]
    fn duplicate_keys_are_refused_with_both_lines() {
        let (_, errors) = tree("a:\n  b: 1\n  b: 2\n");
        assert_eq!(
            errors,
            ["t.yml:3:3: a.b: duplicate key 'b' (first at line 2)"]
        );
    }

    #[test]
    fn odd_keys_tags_merges_and_documents_are_refused() {
        let (_, e) = tree("? [a]\n: 1\n");
        assert!(e[0].contains("a key must be a name, not a list"), "{e:?}");
        let (_, e) = tree("a: !custom x\n");
        assert!(e[0].contains("YAML tag !custom is not supported"), "{e:?}");
        let (_, e) = tree("base: &b {x: 1}\nc:\n  <<: *b\n");
        assert!(e[0].contains("merge keys"), "{e:?}");
        let (_, e) = tree("a: 1\n---\nb: 2\n");
        assert!(
            e[0].starts_with("t.yml:2:1: a second YAML document"),
            "{e:?}"
        );
        let (_, e) = tree("");
        assert_eq!(e, ["t.yml:1:1: the file is empty"]);
    }

    #[test]
    fn core_str_tag_makes_a_string() {
        let (node, _) = tree("a: !!str 80\nb: 80\n");
        let root = node.unwrap();
        let e = map(&root);
        assert!(!e[0].value.scalar().unwrap().plain);
        assert_eq!(e[1].value.scalar().unwrap().as_int(), Some(80));
    }

    #[test]
    fn aliases_expand_within_bounds() {
        let (node, errors) = tree("a: &x [1, 2]\nb: *x\n");
        assert!(errors.is_empty());
        let root = node.unwrap();
        match &map(&root)[1].value.value {
            Value::Seq(items) => assert_eq!(items.len(), 2),
            other => panic!("{other:?}"),
        }
        // Each level doubles the previous one: 2^30 nodes if expanded.
        let mut doc = String::from("l0: &l0 [x, x]\n");
        for i in 1..30 {
            doc.push_str(&format!("l{i}: &l{i} [*l{}, *l{}]\n", i - 1, i - 1));
        }
        let (node, errors) = tree(&doc);
        assert!(node.is_none());
        assert!(errors[0].contains("more than"), "{errors:?}");
        // Nested anchors would each keep a copy of the large list inside.
        let big: Vec<String> = (0..5_000).map(|i| i.to_string()).collect();
        let mut doc = format!("[{}]", big.join(", "));
        for i in 0..60 {
            doc = format!("&n{i} [{doc}]");
        }
        let (node, errors) = tree(&doc);
        assert!(node.is_none());
        assert!(errors[0].contains("more than"), "{errors:?}");
    }

    #[test]
    fn nesting_is_bounded() {
        // Flow nesting trips the scanner's own limit, block nesting ours.
        let (node, errors) = tree(&"[".repeat(100_000));
        assert!(node.is_none());
        assert_eq!(errors.len(), 1, "{errors:?}");
        let mut block = String::new();
        for i in 0..100 {
            block.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        let (node, errors) = tree(&block);
        assert!(node.is_none());
        assert!(errors[0].contains("deeper than 64"), "{errors:?}");
        let mut doc = String::from("a0: &a0 [[[[[[[[[[[[[[[[[[[[x]]]]]]]]]]]]]]]]]]]]\n");
        for i in 1..10 {
            doc.push_str(&format!(
                "a{i}: &a{i} [[[[[[[[[[[[[[[[[[[[*a{}]]]]]]]]]]]]]]]]]]]]\n",
                i - 1
            ));
        }
        let (node, errors) = tree(&doc);
        assert!(node.is_none());
        assert!(errors[0].contains("deeper than"), "{errors:?}");
    }

    #[test]
    fn scalars_are_classified_by_yaml_1_2_rules() {
        let s = |text: &str, plain| Scalar {
            text: text.into(),
            plain,
        };
        assert!(s("~", true).is_null());
        assert!(!s("~", false).is_null());
        assert!(s("true", true).is_bool());
        assert!(!s("no", true).is_bool());
        assert_eq!(s("8080", true).as_int(), Some(8080));
        assert_eq!(s("8080", false).as_int(), None);
        assert_eq!(s("80.5", true).as_int(), None);
        assert_eq!(s(&"9".repeat(40), true).as_int(), None);
    }
}
