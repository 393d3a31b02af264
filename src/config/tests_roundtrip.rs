//! Property tests: valid configurations survive being written and read back
//! (model → YAML → model), and no input, however mangled, makes the parsers
//! panic; whatever they accept writes and reads back unchanged too.
//!
//! The generators build only valid models, by construction: valid names,
//! links whose `app` publishes their `remote_port` as TCP, no two
//! applications publishing the same external port and protocol, and so on.
//! Strings are drawn to be awkward: quotes, colons, `#`, leading and
//! trailing spaces, control characters, Unicode line separators, and words
//! that a YAML reader would take for a number, a boolean or null.

use super::names::{check_alias, check_mountpoint, check_node_key};
use super::*;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::Config as ProptestConfig;
use std::collections::{BTreeMap, BTreeSet};

const EXAMPLE_APPLICATION: &str = include_str!("../../cluster-examples/application.yml");
const EXAMPLE_COMPOSE: &str = include_str!("../../cluster-examples/compose.yml");
const EXAMPLE_DEPLOYMENT: &str = include_str!("../../cluster-examples/deployment.yml");

/// The same applications as the compose example, in fig form (services at
/// the top level).
const EXAMPLE_FIG: &str = "web:\n  image: nginx:1.25\n  ports: [\"8080:80\"]\n  links: [db]\n  environment: [UPSTREAM=http://localhost:8000]\n  mem_limit: 256m\n  restart: on-failure:5\ndb:\n  image: postgres:16\n  ports: [\"5432:5432\"]\n  volumes: [/var/lib/postgresql/data]\n  restart: always\ncache:\n  image: redis:7\n  command: redis-server --maxmemory 64mb\n  ports: [\"6379:6379\"]\n";

/// `cases` per property, few enough that `cargo test` stays fast;
/// `PROPTEST_CASES=100000` runs a deep search instead.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // Failures are shrunk and printed; a case worth keeping becomes a
        // named test rather than a file in the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Pieces of awkward strings: YAML syntax, look-alikes of other types,
/// white space and characters that need escaping.
const AWKWARD: &[&str] = &[
    "",
    "true",
    "False",
    "NULL",
    "null",
    "~",
    "yes",
    "No",
    "on",
    "y",
    "1",
    "-1",
    "+1",
    "007",
    "0x1f",
    "0o17",
    "1e3",
    "1.5",
    ".inf",
    "-.Inf",
    ".nan",
    "1_000",
    "12:30:00",
    "2001-12-14",
    "a: b",
    "a:b",
    ": x",
    "x:",
    "#",
    " #c",
    "a #b",
    "- x",
    "-",
    "--",
    "?",
    "? x",
    "[a, b]",
    "{a: b}",
    "*ref",
    "&anchor",
    "!tag",
    "!!str",
    "%YAML 1.2",
    "@at",
    "`tick",
    "|",
    ">-",
    "'single'",
    "\"double\"",
    "it's",
    "back\\slash",
    "\\n",
    " leading",
    "trailing ",
    "  ",
    "\t",
    "tab\tin",
    "line\nbreak",
    "crlf\r\n",
    "\r",
    "\u{7}",
    "\u{1b}[31m",
    "\u{7f}",
    "\u{85}",
    "\u{a0}",
    "\u{2028}",
    "\u{2029}",
    "\u{feff}",
    "\u{fffd}",
    "\u{10ffff}",
    "é",
    "ünïcödé",
    "日本語",
    "😀",
    "<<",
    "---",
    "...",
    "= x",
    "a=b",
    ",",
    "a,b",
    "{",
    "]",
];

/// A string without NUL, often awkward.
fn awkward() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => select(AWKWARD).prop_map(str::to_string),
        2 => "[a-zA-Z0-9 _./-]{0,8}",
        1 => any::<char>().prop_filter("no NUL", |c| *c != '\0').prop_map(String::from),
    ];
    prop::collection::vec(piece, 1..4).prop_map(|pieces| pieces.concat())
}

fn env_name() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => awkward().prop_filter("a name", |s| !s.is_empty() && !s.contains('=')),
        4 => "[A-Z_][A-Z0-9_]{0,12}",
        // Longer than YAML's 1024-character limit on implicit keys.
        1 => "[A-Z_]{1001,1100}",
    ]
}

fn app_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9][a-z0-9_-]{0,10}",
        2 => select(&[
            "null", "true", "false", "yes", "no", "on", "off", "y", "n", "0", "1", "123",
            "1e3", "0x1f", "0o7", "1_0", "nan", "inf", "12-30",
        ][..])
        .prop_map(str::to_string),
        1 => "[a-z][a-z0-9]{62}",
    ]
    .prop_filter("a valid application name", |n| check_app_name(n).is_ok())
}

fn node_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9][a-z0-9-]{0,10}",
        select(&["null", "true", "1", "y", "no", "0x10", "1e3"][..]).prop_map(str::to_string),
        (any::<u8>(), any::<u8>(), prop::option::of(1u16..)).prop_map(|(a, b, port)| {
            match port {
                Some(p) => format!("10.0.{a}.{b}:{p}"),
                None => format!("10.0.{a}.{b}"),
            }
        }),
        (any::<u16>(), 0..3u8, 1u16..).prop_map(|(x, form, port)| match form {
            0 => format!("fd00::{x:x}"),
            1 => format!("[fd00::{x:x}]"),
            _ => format!("[fd00::{x:x}]:{port}"),
        }),
        "[a-z0-9]{1,5}(\\.[a-z0-9]{1,5}){1,3}",
    ]
    .prop_filter("a valid node key", |k| check_node_key(k).is_ok())
}

fn image() -> impl Strategy<Value = ImageRef> {
    let host = prop::option::of(select(
        &[
            "registry.local:5000",
            "localhost",
            "localhost:5000",
            "quay.io",
            "10.0.0.1:5000",
        ][..],
    ));
    let path = prop::collection::vec("[a-z0-9]{1,6}([._-]|__|--)?[a-z0-9]{1,4}", 1..3);
    let tag = prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}");
    let digest = prop::option::of("[0-9a-f]{64}");
    (host, path, tag, digest).prop_filter_map("a valid image", |(host, path, tag, digest)| {
        let mut text = String::new();
        if let Some(host) = host {
            text.push_str(host);
            text.push('/');
        }
        text.push_str(&path.join("/"));
        if let Some(tag) = tag {
            text.push(':');
            text.push_str(&tag);
        }
        if let Some(digest) = digest {
            text.push_str("@sha256:");
            text.push_str(&digest);
        }
        ImageRef::parse(&text).ok()
    })
}

/// Sizes in bytes: odd numbers of bytes, whole units, and the extremes.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        1u64..=4096,
        (1u64..=4096).prop_map(|n| n << 20),
        (1u64..=64).prop_map(|n| n << 30),
        1u64..,
        Just(u64::MAX),
    ]
}

/// External ports are drawn mostly from a few values, so that applications
/// often want the same one (`build` keeps it for the first) and one
/// application often publishes a number as both TCP and UDP.
fn external_port() -> impl Strategy<Value = (u16, Protocol)> {
    let protocol = prop_oneof![3 => Just(Protocol::Tcp), 1 => Just(Protocol::Udp)];
    (
        prop_oneof![3 => 1u16..=6, 1 => Just(65535), 1 => 1u16..],
        protocol,
    )
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![1u16..=100, Just(65535), 1u16..]
}

fn alias() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9][A-Za-z0-9_-]{0,10}",
        1 => select(&["null", "true", "1", "0x1", "Y", "No", "ON", "1e3"][..]).prop_map(str::to_string),
        1 => "[a-z]{63}",
    ]
    .prop_filter("a valid alias", |a| check_alias(a).is_ok())
}

fn mountpoint() -> impl Strategy<Value = String> {
    prop::collection::vec(awkward(), 1..4)
        .prop_map(|parts| {
            let mut parts: Vec<String> = parts
                .into_iter()
                .map(|p| {
                    if p == ".." {
                        "dotdot".into()
                    } else {
                        p.replace('/', "_")
                    }
                })
                .collect();
            if parts.iter().all(String::is_empty) {
                parts.push("data".into());
            }
            format!("/{}", parts.join("/"))
        })
        .prop_filter("not the reserved /.flocker", |m| {
            check_mountpoint(m).is_ok()
        })
}

fn uuid() -> impl Strategy<Value = String> {
    any::<[u8; 16]>().prop_map(|b| {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    })
}

fn restart_policy() -> impl Strategy<Value = RestartPolicy> {
    prop_oneof![
        Just(RestartPolicy::Never),
        Just(RestartPolicy::Always),
        Just(RestartPolicy::OnFailure {
            maximum_retry_count: None
        }),
        (1u32..).prop_map(|n| RestartPolicy::OnFailure {
            maximum_retry_count: Some(n)
        }),
    ]
}

/// Constraints that no parser would refuse: per label, either one `=` or
/// some distinct `!=` values.
fn constraints() -> impl Strategy<Value = Vec<Constraint>> {
    let label = "[A-Za-z0-9._/-]{1,12}";
    let value = "[!-~]{1,16}";
    let wants = prop_oneof![
        value
            .prop_filter("'!=' would read as the other operator", |v| !v
                .contains("!="))
            .prop_map(|v| vec![(ConstraintOp::Equal, v)]),
        prop::collection::btree_set(value, 1..3).prop_map(|vs| vs
            .into_iter()
            .map(|v| (ConstraintOp::NotEqual, v))
            .collect()),
    ];
    prop::collection::btree_map(label, wants, 0..3).prop_map(|by_label| {
        let mut out: Vec<Constraint> = by_label
            .into_iter()
            .flat_map(|(label, wants)| {
                wants.into_iter().map(move |(op, value)| Constraint {
                    label: label.clone(),
                    op,
                    value,
                })
            })
            .collect();
        out.sort();
        out
    })
}

#[derive(Debug, Clone)]
enum Place {
    Nowhere,
    Anywhere,
    Node(Index),
}

/// A link before it is pointed at an application: which publishing
/// application, which of its ports, the alias and local port.
type LinkSeed = (Index, Index, String, u16);

#[derive(Debug, Clone)]
struct AppSeed {
    spec: AppSpec,
    links: Vec<LinkSeed>,
    place: Place,
}

fn app_seed() -> impl Strategy<Value = AppSeed> {
    let volume = prop::option::of((
        mountpoint(),
        prop::option::of(size()),
        prop::option::of(uuid()),
        any::<bool>(),
        1u32..=VolumeSpec::MAX_REPLICAS,
        prop_oneof![
            Just(VolumeSpec::DEFAULT_MAX_LAG_MS),
            (1u64..=3600).prop_map(|s| s * 1000),
            (1000u64..=60_000),
        ],
    ));
    let basics = (
        image(),
        prop::collection::btree_map(external_port(), port(), 0..4),
        prop::collection::btree_map(env_name(), awkward(), 0..4),
        volume,
        prop::option::of(size()),
        prop::option::of(2u64..=262_144),
    );
    let rest = (
        restart_policy(),
        prop::option::of(prop::collection::vec(awkward(), 1..4)),
        constraints(),
        prop::collection::vec((any::<Index>(), any::<Index>(), alias(), port()), 0..3),
        prop_oneof![
            1 => Just(Place::Nowhere),
            1 => Just(Place::Anywhere),
            2 => any::<Index>().prop_map(Place::Node)
        ],
    );
    (basics, rest).prop_map(
        |(
            (image, ports, environment, volume, mem_limit, cpu_shares),
            (restart_policy, command, constraints, links, place),
        )| {
            let spec = AppSpec {
                image,
                ports: ports
                    .into_iter()
                    .map(|((external, protocol), internal)| PortMapping {
                        internal,
                        external,
                        protocol,
                    })
                    .collect(),
                links: Vec::new(),
                environment,
                volume: volume.map(
                    |(
                        mountpoint,
                        maximum_size,
                        dataset_id,
                        preserve_setuid,
                        replicas,
                        max_lag_ms,
                    )| {
                        VolumeSpec {
                            mountpoint,
                            maximum_size,
                            dataset_id,
                            preserve_setuid,
                            replicas,
                            max_lag_ms,
                        }
                    },
                ),
                mem_limit,
                cpu_shares,
                restart_policy,
                command,
                constraints,
            };
            AppSeed { spec, links, place }
        },
    )
}

/// A valid configuration: up to six applications, pinned on up to three
/// node keys, anywhere, or not deployed.
fn configuration() -> impl Strategy<Value = Configuration> {
    (
        prop::collection::btree_map(app_name(), app_seed(), 0..7),
        prop::collection::vec(node_key(), 1..4),
    )
        .prop_map(|(seeds, nodes)| build(&seeds, &nodes))
}

fn build(seeds: &BTreeMap<String, AppSeed>, nodes: &[String]) -> Configuration {
    // An external port is one application's: the first to want it keeps it.
    let mut claimed = BTreeSet::new();
    let specs: BTreeMap<&String, AppSpec> = seeds
        .iter()
        .map(|(name, seed)| {
            let mut spec = seed.spec.clone();
            spec.ports
                .retain(|p| claimed.insert((p.external, p.protocol)));
            (name, spec)
        })
        .collect();
    // Links lead to TCP ports.
    let publishers: Vec<(&String, Vec<u16>)> = specs
        .iter()
        .map(|(name, spec)| {
            let tcp = spec.ports.iter().filter(|p| p.protocol == Protocol::Tcp);
            (*name, tcp.map(|p| p.external).collect::<Vec<u16>>())
        })
        .filter(|(_, ports)| !ports.is_empty())
        .collect();
    let mut applications = BTreeMap::new();
    let mut datasets = BTreeSet::new();
    for (name, seed) in seeds {
        let mut spec = specs[name].clone();
        let mut seen = BTreeSet::new();
        if !publishers.is_empty() {
            for (target, port, alias, local_port) in &seed.links {
                let (app, ports) = &publishers[target.index(publishers.len())];
                let remote_port = ports[port.index(ports.len())];
                if seen.insert((alias.clone(), *local_port)) {
                    spec.links.push(Link {
                        alias: alias.clone(),
                        local_port: *local_port,
                        remote_port,
                        app: (*app).clone(),
                    });
                }
            }
        }
        spec.links.sort();
        // A volume has one owner.
        if let Some(volume) = &mut spec.volume {
            if let Some(id) = &volume.dataset_id {
                if !datasets.insert(id.clone()) {
                    volume.dataset_id = None;
                }
            }
        }
        applications.insert(name.clone(), spec);
    }

    let mut deployment = Deployment::default();
    for (name, seed) in seeds {
        match &seed.place {
            Place::Nowhere => {}
            Place::Anywhere => deployment.anywhere.push(name.clone()),
            Place::Node(i) => {
                let key = &nodes[i.index(nodes.len())];
                deployment
                    .pinned
                    .entry(key.clone())
                    .or_default()
                    .push(name.clone());
            }
        }
    }
    for apps in deployment.pinned.values_mut() {
        apps.sort();
    }
    deployment.anywhere.sort();
    Configuration {
        applications,
        deployment,
    }
}

fn show(errors: &[ConfigError]) -> String {
    errors.iter().map(|e| format!("{e}\n")).collect()
}

/// Whatever `parse` accepts must survive writing and reading back.
fn assert_round_trip(c: &Configuration) -> Result<(), TestCaseError> {
    let (d, a) = to_files(c);
    match parse(&d, "deployment.yml", &a, "application.yml") {
        Ok(back) => {
            prop_assert_eq!(&back, c, "\n--- deployment.yml\n{}--- application.yml\n{}", d, a);
            // Writing is a function of the model alone.
            prop_assert_eq!(to_files(&back), (d, a));
            Ok(())
        }
        Err(e) => Err(TestCaseError::fail(format!(
            "the written files do not read back:\n{}--- deployment.yml\n{d}--- application.yml\n{a}",
            show(&e)
        ))),
    }
}

/// Parses, and when the files are accepted, checks the round trip.
fn parse_and_round_trip(deployment: &str, application: &str) -> Result<(), TestCaseError> {
    if let Ok(c) = parse(deployment, "d", application, "a") {
        assert_round_trip(&c)?;
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(Index, &'static str),
    Delete(Index, usize),
    Truncate(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
}

/// Tokens that make mangled YAML interesting: indicators, keys of every
/// format, scalars of every type.
const TOKENS: &[&str] = &[
    "",
    ":",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "!!str ",
    "!!int ",
    "!x ",
    "? ",
    "|\n",
    ">\n",
    "\"",
    "'",
    "#",
    "\n",
    "\n  ",
    "\t",
    "%",
    "@",
    "---\n",
    "...\n",
    "<<: ",
    "\u{feff}",
    "é",
    "\\",
    "\\u00",
    "~",
    "null",
    "true",
    "1",
    "-1",
    "0x10",
    "1.5",
    "2G",
    "version: 1\n",
    "version: \"2\"\n",
    "applications:\n",
    "services:\n",
    "nodes:\n",
    "anywhere: ",
    "image: x\n",
    "image: ",
    "ports: ",
    "internal: ",
    "external: ",
    "protocol: udp",
    "protocol: ",
    "links: ",
    "local_port: ",
    "remote_port: ",
    "alias: ",
    "app: ",
    "environment: ",
    "volume: ",
    "volumes: ",
    "mountpoint: /d",
    "maximum_size: ",
    "dataset_id: ",
    "mem_limit: ",
    "cpu_shares: ",
    "restart_policy: ",
    "restart: ",
    "name: ",
    "maximum_retry_count: ",
    "command: ",
    "constraints: ",
    "web",
    "db",
    "n1",
    "10.0.0.1",
    "\"8080:80\"",
    "\"53:53/udp\"",
    "a=b",
    "k!=v",
    "on-failure",
    "always",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<Index>(), select(TOKENS)).prop_map(|(i, t)| Edit::Insert(i, t)),
        2 => (any::<Index>(), 1usize..20).prop_map(|(i, n)| Edit::Delete(i, n)),
        1 => any::<Index>().prop_map(Edit::Truncate),
        1 => any::<Index>().prop_map(Edit::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

/// A char boundary at or before the index's place in `text`.
fn boundary(text: &str, i: &Index) -> usize {
    let mut at = i.index(text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut text = text.to_string();
    for e in edits {
        match e {
            Edit::Insert(i, token) => {
                let at = boundary(&text, i);
                text.insert_str(at, token);
            }
            Edit::Delete(i, n) => {
                let at = boundary(&text, i);
                let mut end = (at + n).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.replace_range(at..end, "");
            }
            Edit::Truncate(i) => {
                let at = boundary(&text, i);
                text.truncate(at);
            }
            Edit::DuplicateLine(i) | Edit::SwapLines(i, _) => {
                let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
                if lines.is_empty() {
                    continue;
                }
                let a = i.index(lines.len());
                if let Edit::SwapLines(_, j) = e {
                    let b = j.index(lines.len());
                    lines.swap(a, b);
                } else {
                    lines.insert(a, lines[a]);
                }
                text = lines.concat();
            }
        }
    }
    text
}

proptest! {
    #![proptest_config(config(128))]

    /// Issue 3, item 4: model → YAML → model.
    #[test]
    fn written_files_read_back_as_the_same_configuration(c in configuration()) {
        assert_round_trip(&c)?;
    }

    #[test]
    fn arbitrary_text_never_panics(deployment in any::<String>(), application in any::<String>()) {
        parse_and_round_trip(&deployment, &application)?;
        parse_and_round_trip(EXAMPLE_DEPLOYMENT, &application)?;
        parse_and_round_trip(&deployment, EXAMPLE_APPLICATION)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let text = String::from_utf8_lossy(&bytes);
        parse_and_round_trip(&text, EXAMPLE_APPLICATION)?;
        parse_and_round_trip(EXAMPLE_DEPLOYMENT, &text)?;
    }

    /// Strings of YAML tokens and Flocker keys, which get much further into
    /// the walkers than random text does.
    #[test]
    fn token_soup_never_panics(
        deployment in prop::collection::vec(select(TOKENS), 0..40),
        application in prop::collection::vec(select(TOKENS), 0..60),
    ) {
        let (deployment, application) = (deployment.concat(), application.concat());
        parse_and_round_trip(&deployment, &application)?;
        parse_and_round_trip(EXAMPLE_DEPLOYMENT, &application)?;
        parse_and_round_trip(&deployment, EXAMPLE_APPLICATION)?;
    }

    /// Valid files, written or shipped, in every form, then mangled.
    #[test]
    fn mutated_valid_files_never_panic(
        c in configuration(),
        source in 0..5usize,
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let (d, a) = to_files(&c);
        let (deployment, application) = match source {
            0 => (apply(&d, &edits), a),
            1 => (d, apply(&a, &edits)),
            2 => (EXAMPLE_DEPLOYMENT.to_string(), apply(EXAMPLE_COMPOSE, &edits)),
            3 => (EXAMPLE_DEPLOYMENT.to_string(), apply(EXAMPLE_FIG, &edits)),
            _ => (apply(EXAMPLE_DEPLOYMENT, &edits), apply(EXAMPLE_APPLICATION, &edits)),
        };
        parse_and_round_trip(&deployment, &application)?;
    }
}

#[test]
fn the_fig_example_reads_like_the_compose_example() {
    let fig = parse(EXAMPLE_DEPLOYMENT, "d", EXAMPLE_FIG, "a").unwrap();
    let compose = parse(EXAMPLE_DEPLOYMENT, "d", EXAMPLE_COMPOSE, "a").unwrap();
    let mut expected = compose.clone();
    // The compose example also sets a CPU share and db's environment.
    let db = expected.applications.get_mut("db").unwrap();
    db.cpu_shares = None;
    db.environment.clear();
    assert_eq!(fig, expected);
    for c in [fig, compose] {
        assert_round_trip(&c).unwrap();
    }
}
