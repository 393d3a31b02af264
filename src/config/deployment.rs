//! Flocker's deployment.yml: `version: 1` and `nodes:`, a map of node key →
//! list of application names pinned there. A node key is a node name, or an
//! IP address or host name as Flocker's files used (matched to a member
//! later, by `resolve`).
//!
//! Our addition: a top-level `anywhere:` list of applications the cluster
//! places itself. An application is named at most once in the whole file.
//! `nodes` may be left out when `anywhere` is given.
//!
//! This module reads the file into placements that remember where each
//! name was written; `validate.rs` checks them against the applications.

use super::application::read_version;
use super::apps::Mark;
use super::error::{KeyPath, Sink};
use super::names;
use super::read;
use super::yaml::Node;

/// One application name in the deployment file.
#[derive(Debug)]
pub(crate) struct Placement {
    pub app: String,
    /// The node key, or `None` for `anywhere`.
    pub node: Option<String>,
    pub mark: Mark,
}

const TOP_KEYS: &[&str] = &["version", "nodes", "anywhere"];

/// `None` when the file's top level is not a map.
pub(crate) fn read(sink: &mut Sink, root: &Node) -> Option<Vec<Placement>> {
    let path = KeyPath::root();
    let entries = read::map(sink, root, &path, "a map with 'version' and 'nodes'")?;
    let has = |k: &str| read::get(entries, k).is_some();
    if !has("nodes") && !has("anywhere") && (has("applications") || has("services")) {
        let message = "this is an application file, not a deployment file (the order is DEPLOYMENT APPLICATION)";
        sink.at(root.at, &path, message);
        return None;
    }
    read::check_keys(sink, entries, &path, TOP_KEYS, &[]);
    read_version(sink, entries, root.at);
    let mut placements = Vec::new();
    let nodes = read::get(entries, "nodes");
    let anywhere = read::get(entries, "anywhere");
    if nodes.is_none() && anywhere.is_none() {
        sink.at(root.at, &path, "missing 'nodes'");
    }
    if let Some(nodes) = nodes {
        let p = path.key("nodes");
        if let Some(node_entries) = read::map(
            sink,
            &nodes.value,
            &p,
            "a map of nodes to lists of application names",
        ) {
            for entry in node_entries {
                let node_path = p.key(&entry.key);
                if let Err(why) = names::check_node_key(&entry.key) {
                    sink.at(entry.key_at, &node_path, why);
                }
                read_names(
                    sink,
                    &entry.value,
                    &node_path,
                    Some(&entry.key),
                    &mut placements,
                );
            }
        }
    }
    if let Some(anywhere) = anywhere {
        read_names(
            sink,
            &anywhere.value,
            &path.key("anywhere"),
            None,
            &mut placements,
        );
    }
    Some(placements)
}

fn read_names(
    sink: &mut Sink,
    node: &Node,
    path: &KeyPath,
    key: Option<&str>,
    out: &mut Vec<Placement>,
) {
    let expected = "a list of application names (write [] for none)";
    let Some(items) = read::seq(sink, node, path, expected) else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        if let Some(app) = read::text(sink, item, &p, "an application name") {
            out.push(Placement {
                app,
                node: key.map(str::to_string),
                mark: Mark {
                    at: item.at,
                    path: p,
                },
            });
        }
    }
}
