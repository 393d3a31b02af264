//! The configuration written back as Flocker's two files, for `flocker ctl
//! config show`: an operator can save what it prints and deploy it again
//! unchanged.
//!
//! The output is always Flocker's own form (`version: 1`, `applications:`),
//! whatever form the configuration was deployed from, and it reads back into
//! the same model: for every configuration `c` that [`parse`](super::parse)
//! returned, `parse(to_files(c)) == Ok(c)`. The property tests
//! (`tests_roundtrip.rs`) and the fuzz targets (`fuzz/`) check this.
//!
//! What it writes:
//! - Keys at their defaults are left out (no ports, no links, restart policy
//!   `never`, …), so the files hold only what was asked for.
//! - A port gets our `protocol` key only when it is UDP.
//! - A link never gets our `app` key: its `remote_port` says where it leads,
//!   since an external port is one application's in the whole cluster.
//! - Sizes are written in the shortest exact unit (`2G`, `1536K`, or
//!   bytes), which reads back to the same number of bytes.
//! - A string is written plain only when no YAML reader could take it for
//!   anything else (a number, a boolean, null, YAML syntax); otherwise it is
//!   double-quoted, with anything unprintable escaped, so every string reads
//!   back exactly, and the files are plain printable text.
//! - Maps and lists come out in the model's order, which is canonical, so
//!   the same configuration always gives the same bytes.

use super::duration::format_duration_ms;
use super::model::{AppSpec, Configuration, Deployment, Protocol, RestartPolicy, VolumeSpec};
use super::size::format_size;
use std::fmt::Write as _;

/// The configuration as Flocker's `(deployment.yml, application.yml)`, in
/// that order (Flocker's argument order, as `ctl deploy` takes them).
pub fn to_files(configuration: &Configuration) -> (String, String) {
    (
        deployment_yml(&configuration.deployment),
        application_yml(configuration),
    )
}

fn deployment_yml(deployment: &Deployment) -> String {
    let mut out = String::from("version: 1\n");
    if deployment.pinned.is_empty() {
        out.push_str("nodes: {}\n");
    } else {
        out.push_str("nodes:\n");
        for (node, apps) in &deployment.pinned {
            let _ = writeln!(out, "  {}: {}", key(node), flow_list(apps));
        }
    }
    if !deployment.anywhere.is_empty() {
        let _ = writeln!(out, "anywhere: {}", flow_list(&deployment.anywhere));
    }
    out
}

fn application_yml(configuration: &Configuration) -> String {
    let mut out = String::from("version: 1\n");
    if configuration.applications.is_empty() {
        out.push_str("applications: {}\n");
        return out;
    }
    out.push_str("applications:\n");
    for (name, app) in &configuration.applications {
        let _ = writeln!(out, "  {}:", key(name));
        write_app(&mut out, app);
    }
    out
}

fn write_app(out: &mut String, app: &AppSpec) {
    const I: &str = "    ";
    let _ = writeln!(out, "{I}image: {}", string(&app.image.to_string()));
    if !app.ports.is_empty() {
        let _ = writeln!(out, "{I}ports:");
        for port in &app.ports {
            let _ = writeln!(out, "{I}  - internal: {}", port.internal);
            let _ = writeln!(out, "{I}    external: {}", port.external);
            if port.protocol != Protocol::Tcp {
                let _ = writeln!(out, "{I}    protocol: {}", port.protocol.name());
            }
        }
    }
    if !app.links.is_empty() {
        let _ = writeln!(out, "{I}links:");
        for link in &app.links {
            let _ = writeln!(out, "{I}  - local_port: {}", link.local_port);
            let _ = writeln!(out, "{I}    remote_port: {}", link.remote_port);
            let _ = writeln!(out, "{I}    alias: {}", string(&link.alias));
        }
    }
    if !app.environment.is_empty() {
        let _ = writeln!(out, "{I}environment:");
        for (name, value) in &app.environment {
            entry(out, "      ", name, &string(value));
        }
    }
    if let Some(volume) = &app.volume {
        let _ = writeln!(out, "{I}volume:");
        let _ = writeln!(out, "{I}  mountpoint: {}", string(&volume.mountpoint));
        if let Some(size) = volume.maximum_size {
            let _ = writeln!(out, "{I}  maximum_size: {}", format_size(size));
        }
        if let Some(id) = &volume.dataset_id {
            let _ = writeln!(out, "{I}  dataset_id: {}", string(id));
        }
        if volume.preserve_setuid {
            let _ = writeln!(out, "{I}  preserve_setuid: true");
        }
        if volume.replicas != 1 {
            let _ = writeln!(out, "{I}  replicas: {}", volume.replicas);
        }
        if volume.max_lag_ms != VolumeSpec::DEFAULT_MAX_LAG_MS {
            let _ = writeln!(
                out,
                "{I}  max_lag: {}",
                format_duration_ms(volume.max_lag_ms)
            );
        }
    }
    if let Some(bytes) = app.mem_limit {
        let _ = writeln!(out, "{I}mem_limit: {}", format_size(bytes));
    }
    if let Some(shares) = app.cpu_shares {
        let _ = writeln!(out, "{I}cpu_shares: {shares}");
    }
    match app.restart_policy {
        RestartPolicy::Never => {}
        policy => {
            let _ = writeln!(out, "{I}restart_policy:");
            let _ = writeln!(out, "{I}  name: {}", policy.name());
            if let RestartPolicy::OnFailure {
                maximum_retry_count: Some(n),
            } = policy
            {
                let _ = writeln!(out, "{I}  maximum_retry_count: {n}");
            }
        }
    }
    if let Some(command) = &app.command {
        let _ = writeln!(out, "{I}command:");
        for word in command {
            let _ = writeln!(out, "{I}  - {}", string(word));
        }
    }
    if !app.constraints.is_empty() {
        let _ = writeln!(out, "{I}constraints:");
        for constraint in &app.constraints {
            let _ = writeln!(out, "{I}  - {}", string(&constraint.to_string()));
        }
    }
}

/// Longest key written in the usual `key: value` form. YAML limits such
/// ("implicit") keys to 1024 characters; longer ones, which only an
/// environment variable's name can be, use the explicit `? key` form.
const LONGEST_IMPLICIT_KEY: usize = 1000;

/// One `key: value` line (or the explicit form for a very long key).
fn entry(out: &mut String, indent: &str, name: &str, value: &str) {
    let k = key(name);
    if k.len() <= LONGEST_IMPLICIT_KEY {
        let _ = writeln!(out, "{indent}{k}: {value}");
    } else {
        let _ = writeln!(out, "{indent}? {k}");
        let _ = writeln!(out, "{indent}: {value}");
    }
}

fn key(name: &str) -> String {
    string(name)
}

/// `[a, b]`, each item a string.
fn flow_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| string(s)).collect();
    format!("[{}]", items.join(", "))
}

/// A string as a YAML scalar that reads back as exactly this string.
pub(crate) fn string(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_string()
    } else {
        double_quoted(s)
    }
}

/// Words that some YAML reader takes for a boolean or null when unquoted
/// (YAML 1.2's core schema, and YAML 1.1's `yes`/`no`/`on`/`off`), compared
/// in lower case.
const LOOKALIKES: &[&str] = &["null", "true", "false", "yes", "no", "on", "off", "y", "n"];

/// Whether `s` reads back as this string when written unquoted, in block
/// and flow context alike, by any YAML reader: a letter, `_` or `/` first
/// (so never a number, an indicator or a special float), then only letters,
/// digits and `_./=-`, and not a boolean or null look-alike.
fn is_plain_safe(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_' || first == '/')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_./=-".contains(c))
        && !LOOKALIKES.contains(&s.to_ascii_lowercase().as_str())
}

/// A double-quoted scalar on one line: `"` and `\` escaped, line breaks and
/// other control characters (and the Unicode characters YAML readers treat
/// as line breaks or byte-order marks) written as escapes.
fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let n = u32::from(c);
                let _ = if n <= 0xff {
                    write!(out, "\\x{n:02x}")
                } else if n <= 0xffff {
                    write!(out, "\\u{n:04x}")
                } else {
                    write!(out, "\\U{n:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Characters outside YAML's printable set, and the ones that are printable
/// but read as line breaks (U+2028, U+2029) or a byte-order mark.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, ImageRef, Link, PortMapping, Protocol};

    fn reread(c: &Configuration) -> Configuration {
        let (d, a) = to_files(c);
        match parse(&d, "deployment.yml", &a, "application.yml") {
            Ok(back) => back,
            Err(e) => panic!(
                "{}\n--- deployment.yml\n{d}--- application.yml\n{a}",
                e.iter().map(|e| format!("{e}\n")).collect::<String>()
            ),
        }
    }

    #[test]
    fn the_shipped_examples_come_back_in_flocker_form() {
        let deployment = include_str!("../../cluster-examples/deployment.yml");
        for application in [
            include_str!("../../cluster-examples/application.yml"),
            include_str!("../../cluster-examples/compose.yml"),
        ] {
            let c = parse(deployment, "d", application, "a").unwrap();
            assert_eq!(reread(&c), c);
        }
        let c = parse(
            deployment,
            "d",
            include_str!("../../cluster-examples/application.yml"),
            "a",
        )
        .unwrap();
        let (d, a) = to_files(&c);
        assert_eq!(
            d,
            "version: 1\nnodes:\n  n1: [web]\n  n2: [db]\nanywhere: [cache]\n"
        );
        assert_eq!(
            a,
            r#"version: 1
applications:
  cache:
    image: "redis:7"
    ports:
      - internal: 6379
        external: 6379
    command:
      - redis-server
      - "--maxmemory"
      - "64mb"
  db:
    image: "postgres:16"
    ports:
      - internal: 5432
        external: 5432
    environment:
      PGDATA: /var/lib/postgresql/data/pgdata
      POSTGRES_PASSWORD: example-only
    volume:
      mountpoint: /var/lib/postgresql/data
      maximum_size: 2G
    cpu_shares: 1024
    restart_policy:
      name: always
    constraints:
      - disk=ssd
  web:
    image: "nginx:1.25"
    ports:
      - internal: 80
        external: 8080
    links:
      - local_port: 5432
        remote_port: 5432
        alias: db
    environment:
      UPSTREAM: "http://localhost:8000"
    mem_limit: 256M
    restart_policy:
      name: on-failure
      maximum_retry_count: 5
"#
        );
    }

    #[test]
    fn an_empty_configuration_is_two_small_files() {
        let c = Configuration::default();
        assert_eq!(
            to_files(&c),
            (
                "version: 1\nnodes: {}\n".to_string(),
                "version: 1\napplications: {}\n".to_string()
            )
        );
        assert_eq!(reread(&c), c);
    }

    #[test]
    fn strings_that_look_like_other_things_are_quoted() {
        for s in [
            "", "null", "Null", "~", "true", "FALSE", "yes", "no", "on", "y", "1", "-1", "0x1f",
            "1e3", ".5", ".inf", "-.inf", ".nan", "1_000", "12:30", "a: b", "a #b", "#a", "- a",
            "-", "?", "[a]", "{a}", "*a", "&a", "!a", "%a", "@a", "`a", "|", ">", "'a'", "\"a\"",
            " a", "a ", "a\nb", "<<", "=",
        ] {
            assert!(string(s).starts_with('"'), "{s:?} written as {}", string(s));
        }
        for s in ["web", "/srv/data", "disk=ssd", "a-b_c.d", "_x", "Postgres"] {
            assert_eq!(string(s), s);
        }
        assert_eq!(
            string("a\"b\\c\td\u{1}\u{85}\u{2028}é😀"),
            "\"a\\\"b\\\\c\\td\\x01\\x85\\u2028é😀\""
        );
    }

    #[test]
    fn udp_ports_say_so_and_links_never_name_their_application() {
        let mut c = Configuration::default();
        let image = ImageRef::parse("x").unwrap();
        let mut dns = AppSpec::new(image.clone());
        dns.ports = vec![
            PortMapping {
                internal: 53,
                external: 53,
                protocol: Protocol::Tcp,
            },
            PortMapping {
                internal: 5353,
                external: 53,
                protocol: Protocol::Udp,
            },
        ];
        c.applications.insert("dns".into(), dns);
        let mut web = AppSpec::new(image);
        web.links = vec![Link {
            alias: "dns".into(),
            local_port: 53,
            remote_port: 53,
            app: "dns".into(),
        }];
        c.applications.insert("web".into(), web);
        let (_, a) = to_files(&c);
        assert!(
            a.contains(
                "      - internal: 53\n        external: 53\n      - internal: 5353\n        external: 53\n        protocol: udp\n"
            ),
            "{a}"
        );
        assert_eq!(a.matches("protocol: ").count(), 1, "{a}");
        assert!(!a.contains("app: "), "{a}");
        assert_eq!(reread(&c), c);
    }

    /// A link naming its application (written when two applications could
    /// share an external port) still reads, and is written without it.
    #[test]
    fn an_old_link_naming_its_application_is_written_without_it() {
        let old = "version: 1\napplications:\n  a: {image: x, ports: [{internal: 1, external: 9000}]}\n  web:\n    image: x\n    links: [{local_port: 80, remote_port: 9000, alias: b, app: a}]\n";
        let c = parse("version: 1\nanywhere: [a, web]\n", "d", old, "a").unwrap();
        assert_eq!(c.applications["web"].links[0].app, "a");
        let (_, a) = to_files(&c);
        assert!(!a.contains("app: "), "{a}");
        assert_eq!(reread(&c), c);
    }

    #[test]
    fn very_long_environment_names_use_explicit_keys() {
        let mut c = Configuration::default();
        let mut app = AppSpec::new(ImageRef::parse("x").unwrap());
        app.environment.insert("K".repeat(3000), "v".into());
        app.environment.insert("S".into(), "w".repeat(3000));
        c.applications.insert("a".into(), app);
        let (_, a) = to_files(&c);
        assert!(a.contains("      ? KKK"), "{a}");
        assert_eq!(reread(&c), c);
    }
}
