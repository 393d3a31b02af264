//! `flocker config check` as an operator runs it: the real binary on the
//! shipped examples and on broken files, checking exit codes and that every
//! error names its file, line, column and key path.

mod common;

use common::write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster-examples")
}

fn check(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flocker"))
        .arg("config")
        .arg("check")
        .args(args)
        .output()
        .expect("run flocker")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn shipped_examples_pass_in_both_forms() {
    let deployment = examples().join("deployment.yml");
    for (file, form) in [
        ("application.yml", "Flocker form"),
        ("compose.yml", "compose form"),
    ] {
        let out = check(&[&deployment, &examples().join(file)]);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", stderr(&out));
        assert_eq!(
            stdout(&out),
            format!("ok: 3 applications (2 pinned on 2 nodes, 1 anywhere), application file in {form}\n")
        );
        assert_eq!(stderr(&out), "");
    }
}

/// The demo's files (cluster-examples/demo deploys them) are valid as shipped.
#[test]
fn demo_apps_pass() {
    let demo = examples().join("demo-apps");
    let out = check(&[&demo.join("deployment.yml"), &demo.join("application.yml")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "ok: 2 applications (1 pinned on 1 node, 1 anywhere), application file in Flocker form\n"
    );
}

#[test]
fn every_error_in_both_files_is_listed_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let app = write(
        dir.path(),
        "application.yml",
        r#"version: 1
applications:
  web:
    image: "nginx:1.25"
    ports:
      - internal: eighty
        external: 8080
    volume:
      mountpoint: srv/data
  api:
    image: "api:1"
    ports:
      - internal: 8000
        external: 8080
    mem_limit: 2X
    restart_policy: {name: always, maximum_retry_count: 3}
"#,
    );
    let dep = write(
        dir.path(),
        "deployment.yml",
        r#"version: 1
nodes:
  "10.0.0.1": [web, api, dbb]
  n2: [web]
"#,
    );
    let out = check(&[&dep, &app]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let (d, a) = (dep.display(), app.display());
    let expected = [
        format!("{d}:3:26: nodes.\"10.0.0.1\"[2]: unknown application 'dbb'"),
        format!("{d}:4:8: nodes.n2[0]: 'web' is placed twice"),
        format!("{a}:6:19: applications.web.ports[0].internal: expected a port number 1-65535, got \"eighty\""),
        format!("{a}:9:19: applications.web.volume.mountpoint: mountpoint 'srv/data' is not an absolute path"),
        format!("{a}:15:16: applications.api.mem_limit: expected bytes or a size like 500M or 2.5G"),
        format!("{a}:16:36: applications.api.restart_policy.maximum_retry_count: maximum_retry_count is only allowed with name: on-failure"),
    ];
    let text = stderr(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), expected.len() + 1, "{text}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(want.as_str()),
            "expected {want:?}\n     got {line:?}"
        );
    }
    assert_eq!(lines.last(), Some(&"6 errors found"));
}

#[test]
fn a_port_clash_across_nodes_and_a_broken_link_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let app = write(
        dir.path(),
        "compose.yml",
        r#"services:
  web:
    image: nginx
    ports: ["8080:80", "53:53/udp"]
    links: ["dbb:db"]
  api:
    image: api
    ports: ["8080:8000", "53:53/tcp"]
  db:
    image: postgres
    ports: ["5432:5432"]
"#,
    );
    // On different nodes: every node answers on every external port.
    let dep = write(
        dir.path(),
        "deployment.yml",
        "version: 1\nnodes:\n  n1: [web]\n  n2: [api]\nanywhere: [db]\n",
    );
    let out = check(&[&dep, &app]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    let a = app.display();
    assert_eq!(
        text,
        format!(
            "{a}:5:13: services.web.links[0]: link to unknown service 'dbb' (did you mean 'db'?)\n\
             {a}:8:13: services.api.ports[0]: external port 8080 is also published by 'web'; external ports are cluster-wide: every node answers on them\n\
             2 errors found\n"
        )
    );
}

#[test]
fn a_syntax_error_does_not_hide_the_other_files_errors() {
    let dir = tempfile::tempdir().unwrap();
    let app = write(
        dir.path(),
        "application.yml",
        "version: 1\napplications:\n  web: {image: [x\n",
    );
    let dep = write(
        dir.path(),
        "deployment.yml",
        "version: 1\nnodes:\n  n1: [web]\n  n1: []\n",
    );
    let out = check(&[&dep, &app]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains(&format!(
            "{}:4:3: nodes.n1: duplicate key 'n1' (first at line 3)",
            dep.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}:4:1: YAML syntax error:", app.display())),
        "{text}"
    );
}

#[test]
fn unreadable_and_oversized_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yml");
    let big = write(
        dir.path(),
        "big.yml",
        &format!("version: 1\n# {}\n", "x".repeat(5 << 20)),
    );
    let out = check(&[&big, &missing]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains(&format!("{}: the file is larger than 4 MiB", big.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}: cannot read:", missing.display())),
        "{text}"
    );
}

#[test]
fn missing_arguments_are_a_usage_error() {
    let out = check(&[&examples().join("deployment.yml")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("<APPLICATION>"), "{}", stderr(&out));
}
