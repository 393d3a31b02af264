//! Whole-file tests: each format read into the model, and each class of
//! error reported with its file, line, column and key path.

use super::*;
use std::collections::BTreeMap;

const EXAMPLE_APPLICATION: &str = include_str!("../../cluster-examples/application.yml");
const EXAMPLE_COMPOSE: &str = include_str!("../../cluster-examples/compose.yml");
const EXAMPLE_DEPLOYMENT: &str = include_str!("../../cluster-examples/deployment.yml");

/// A deployment placing `apps` anywhere, for tests about the application file.
fn anywhere(apps: &[&str]) -> String {
    format!("version: 1\nanywhere: [{}]\n", apps.join(", "))
}

fn ok(deployment: &str, application: &str) -> Configuration {
    match parse(deployment, "deployment.yml", application, "application.yml") {
        Ok(c) => c,
        Err(errors) => panic!("unexpected errors:\n{}", render(&errors)),
    }
}

fn errors(deployment: &str, application: &str) -> Vec<String> {
    match parse(deployment, "deployment.yml", application, "application.yml") {
        Ok(c) => panic!("accepted: {c:#?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn render(errors: &[ConfigError]) -> String {
    errors.iter().map(|e| format!("{e}\n")).collect()
}

/// Asserts that exactly one error contains `needle`, and returns it.
fn one<'a>(errors: &'a [String], needle: &str) -> &'a str {
    let found: Vec<&String> = errors.iter().filter(|e| e.contains(needle)).collect();
    assert_eq!(
        found.len(),
        1,
        "looking for {needle:?} in:\n{}",
        errors.join("\n")
    );
    found[0]
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn flocker_form_with_every_key() {
    let app = r#"
version: 1
"applications":
  "web":
    "image": "registry.local:5000/shop/web:2.1"
    ports:
    - internal: 80
      external: 8080
    - {internal: 443, external: 8443}
    - {internal: 443, external: 8443, protocol: udp}
    links:
    - local_port: 5432
      remote_port: 5432
      alias: DB
    environment:
      MODE: production
      WORKERS: 4
    volume:
      mountpoint: /srv/uploads
      maximum_size: "2.5G"
      dataset_id: 0a1b2c3d-0000-4000-8000-00000000abcd
    mem_limit: 512M
    cpu_shares: 512
    restart_policy:
      name: on-failure
      maximum_retry_count: 3
    command: ["/bin/web", "--port", "80"]
    constraints: ["disk=ssd", "zone!=eu-1"]
  db:
    image: postgres
    ports: [{internal: 5432, external: 5432}]
    mem_limit: 1073741824
    restart_policy: {name: always}
"#;
    let c = ok(&anywhere(&["web", "db"]), app);
    let web = &c.applications["web"];
    assert_eq!(
        web.image,
        ImageRef {
            name: "registry.local:5000/shop/web".into(),
            tag: Some("2.1".into()),
            digest: None
        }
    );
    assert_eq!(
        web.ports,
        [
            PortMapping {
                internal: 80,
                external: 8080,
                protocol: Protocol::Tcp
            },
            PortMapping {
                internal: 443,
                external: 8443,
                protocol: Protocol::Tcp
            },
            PortMapping {
                internal: 443,
                external: 8443,
                protocol: Protocol::Udp
            }
        ]
    );
    assert_eq!(
        web.links,
        [Link {
            alias: "DB".into(),
            local_port: 5432,
            remote_port: 5432,
            app: "db".into()
        }]
    );
    assert_eq!(
        web.environment,
        env(&[("MODE", "production"), ("WORKERS", "4")])
    );
    assert_eq!(
        web.volume,
        Some(VolumeSpec {
            mountpoint: "/srv/uploads".into(),
            maximum_size: Some(2_684_354_560),
            dataset_id: Some("0a1b2c3d-0000-4000-8000-00000000abcd".into()),
            preserve_setuid: false,
            replicas: 1,
            max_lag_ms: VolumeSpec::DEFAULT_MAX_LAG_MS,
        })
    );
    assert_eq!(web.mem_limit, Some(512 << 20));
    assert_eq!(web.cpu_shares, Some(512));
    assert_eq!(
        web.restart_policy,
        RestartPolicy::OnFailure {
            maximum_retry_count: Some(3)
        }
    );
    assert_eq!(
        web.command,
        Some(vec!["/bin/web".into(), "--port".into(), "80".into()])
    );
    assert_eq!(
        web.constraints
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["disk=ssd", "zone!=eu-1"]
    );
    let db = &c.applications["db"];
    assert_eq!(db.image.to_string(), "postgres:latest");
    assert_eq!(db.mem_limit, Some(1 << 30));
    assert_eq!(db.restart_policy, RestartPolicy::Always);
    assert_eq!(db.volume, None);
    assert_eq!(db.command, None);
    assert_eq!(c.deployment.anywhere, ["db", "web"]);
}

#[test]
fn defaults_are_flockers() {
    let c = ok(
        &anywhere(&["a"]),
        "version: 1\napplications:\n  a:\n    image: busybox\n",
    );
    let a = &c.applications["a"];
    assert_eq!(a.restart_policy, RestartPolicy::Never);
    assert!(a.ports.is_empty() && a.links.is_empty() && a.environment.is_empty());
    assert_eq!(
        (a.volume.clone(), a.mem_limit, a.cpu_shares),
        (None, None, None)
    );
}

#[test]
fn fig_form_links_give_the_targets_ports() {
    let fig = r#"
mysql:
  image: "mysql:5.6.17"
  environment:
    "MYSQL_ROOT_PASSWORD": "clusterhq"
  ports:
    - "3306:3306"
    - "13306:3307"
  mem_limit: 100000000
  volumes:
    - "/var/lib/mysql"
wordpress:
  image: wordpress
  links: ["mysql:db", "mysql"]
  environment:
    - "WP_ADMIN_USERNAME=admin"
    - "EMPTY"
    - "WITH_EQUALS=a=b"
  ports: ["8080:80"]
"#;
    let c = ok(&anywhere(&["mysql", "wordpress"]), fig);
    let mysql = &c.applications["mysql"];
    assert_eq!(mysql.mem_limit, Some(100_000_000));
    assert_eq!(mysql.volume.as_ref().unwrap().mountpoint, "/var/lib/mysql");
    let wp = &c.applications["wordpress"];
    let links: Vec<(&str, u16, u16, &str)> = wp
        .links
        .iter()
        .map(|l| {
            (
                l.alias.as_str(),
                l.local_port,
                l.remote_port,
                l.app.as_str(),
            )
        })
        .collect();
    assert_eq!(
        links,
        [
            ("db", 3306, 3306, "mysql"),
            ("db", 3307, 13306, "mysql"),
            ("mysql", 3306, 3306, "mysql"),
            ("mysql", 3307, 13306, "mysql"),
        ]
    );
    assert_eq!(
        wp.environment,
        env(&[
            ("WP_ADMIN_USERNAME", "admin"),
            ("EMPTY", ""),
            ("WITH_EQUALS", "a=b")
        ])
    );
}

#[test]
fn compose_form_reads_like_the_flocker_form() {
    let flocker = ok(EXAMPLE_DEPLOYMENT, EXAMPLE_APPLICATION);
    let compose = ok(EXAMPLE_DEPLOYMENT, EXAMPLE_COMPOSE);
    // What compose has no key for is the only difference.
    let mut expected = flocker.clone();
    let db = expected.applications.get_mut("db").unwrap();
    db.volume.as_mut().unwrap().maximum_size = None;
    db.constraints.clear();
    assert_eq!(compose, expected);
    assert_eq!(flocker.applications.len(), 3);
    assert_eq!(
        flocker.summary(),
        "3 applications (2 pinned on 2 nodes, 1 anywhere)"
    );
}

#[test]
fn compose_specific_syntax() {
    let compose = r#"
version: "3.8"
services:
  worker:
    image: alpine:3
    command: sh -c 'echo "hello world"; sleep 10'
    restart: "no"
    environment:
      FROM_SHELL:
      COUNT: 3
  other:
    image: alpine:3
    command: ["sleep", "1"]
    restart: on-failure
"#;
    let c = ok(&anywhere(&["worker", "other"]), compose);
    let w = &c.applications["worker"];
    assert_eq!(
        w.command,
        Some(vec![
            "sh".into(),
            "-c".into(),
            "echo \"hello world\"; sleep 10".into()
        ])
    );
    assert_eq!(w.restart_policy, RestartPolicy::Never);
    assert_eq!(w.environment, env(&[("FROM_SHELL", ""), ("COUNT", "3")]));
    assert_eq!(
        c.applications["other"].restart_policy,
        RestartPolicy::OnFailure {
            maximum_retry_count: None
        }
    );
}

#[test]
fn deployment_keys_lists_and_anywhere() {
    let app = "version: 1\napplications:\n  a: {image: x}\n  b: {image: x}\n  c: {image: x}\n  d: {image: x}\n";
    let dep = r#"
version: 1
nodes:
  "10.0.0.1": [b, a]
  node-2.example.com: []
  n3:
  - c
"#;
    let c = ok(dep, app);
    assert_eq!(
        c.deployment.pinned,
        BTreeMap::from([
            (
                "10.0.0.1".to_string(),
                vec!["a".to_string(), "b".to_string()]
            ),
            ("n3".to_string(), vec!["c".to_string()]),
        ])
    );
    assert_eq!(c.deployment.node_key_of("c"), Some("n3"));
    assert!(c.deployment.anywhere.is_empty());
    assert_eq!(
        c.summary(),
        "4 applications (3 pinned on 2 nodes, 0 anywhere, 1 not deployed)"
    );
}

#[test]
fn the_model_is_canonical_and_survives_both_encodings() {
    let a = "version: 1\napplications:\n  w:\n    image: x\n    ports: [{internal: 1, external: 2}, {internal: 3, external: 4}]\n    constraints: [b=1, a=1]\n";
    let b = "version: 1\napplications:\n  w:\n    constraints: [a=1, b=1]\n    ports: [{internal: 3, external: 4}, {internal: 1, external: 2}]\n    image: x:latest\n";
    let one = ok(&anywhere(&["w"]), a);
    assert_eq!(one, ok(&anywhere(&["w"]), b));
    let full = ok(EXAMPLE_DEPLOYMENT, EXAMPLE_APPLICATION);
    let bytes = postcard::to_allocvec(&full).unwrap();
    assert_eq!(postcard::from_bytes::<Configuration>(&bytes).unwrap(), full);
    let json = serde_json::to_string(&full).unwrap();
    assert_eq!(serde_json::from_str::<Configuration>(&json).unwrap(), full);
}

#[test]
fn syntax_errors_point_at_the_problem() {
    let e = errors(
        &anywhere(&["a"]),
        "version: 1\napplications:\n  a: {image: x\n",
    );
    let e = one(&e, "YAML syntax error");
    assert!(e.starts_with("application.yml:4:"), "{e}");
}

#[test]
fn type_errors_say_what_was_expected_and_found() {
    let app = r#"version: 1
applications:
  web:
    image: x
    ports:
      - internal: eighty
        external: "8080"
    environment: [A=b]
    cpu_shares: lots
    links: {alias: db}
"#;
    let e = errors(&anywhere(&["web"]), app);
    assert_eq!(
        one(&e, "internal"),
        "application.yml:6:19: applications.web.ports[0].internal: expected a port number 1-65535, got \"eighty\""
    );
    assert_eq!(
        one(&e, "external"),
        "application.yml:7:19: applications.web.ports[0].external: expected a port number 1-65535, got the string \"8080\" (write the number without quotes)"
    );
    one(&e, "applications.web.environment: expected a map of environment variable names to values, got a list");
    one(
        &e,
        "applications.web.cpu_shares: expected CPU shares 2-262144, got \"lots\"",
    );
    one(&e, "applications.web.links: expected a list of {local_port, remote_port, alias} links, got a map");
    assert_eq!(e.len(), 5, "{e:#?}");
}

#[test]
fn unknown_keys_are_refused_by_name_at_every_level() {
    let app = r#"version: 1
applications:
  web:
    imgae: x
    image: x
    volume: {mountpoint: /data, size: 1G}
    restart_policy: {name: always, retries: 2}
extra: true
"#;
    let e = errors(&anywhere(&["web"]), app);
    assert_eq!(
        one(&e, "imgae"),
        "application.yml:4:5: applications.web.imgae: unknown key 'imgae' (did you mean 'image'?)"
    );
    one(&e, "applications.web.volume.size: unknown key 'size'");
    one(
        &e,
        "applications.web.restart_policy.retries: unknown key 'retries'",
    );
    one(&e, "application.yml:8:1: extra: unknown key 'extra'");
    let compose = "services:\n  web:\n    image: x\n    build: .\n    healthcheck: {}\nx-common: {}\nnetworks: {}\n";
    let e = errors(&anywhere(&["web"]), compose);
    one(
        &e,
        "services.web.build: 'build' is not supported: give 'image'",
    );
    one(
        &e,
        "services.web.healthcheck: 'healthcheck' is not supported",
    );
    one(&e, "x-common: extension field 'x-common' is not supported");
    one(&e, "networks: 'networks' is not supported");
}

#[test]
fn deployment_errors_name_the_node_key_and_position() {
    let app = "version: 1\napplications:\n  db: {image: x}\n  web: {image: x}\n";
    let dep = r#"version: 1
nodes:
  "10.0.0.1": [web, dbb]
  n2: [web]
  n3: db
anywhere: [db]
"#;
    let e = errors(dep, app);
    assert_eq!(
        one(&e, "dbb"),
        "deployment.yml:3:21: nodes.\"10.0.0.1\"[1]: unknown application 'dbb' (did you mean 'db'?)"
    );
    assert_eq!(
        one(&e, "placed twice"),
        "deployment.yml:4:8: nodes.n2[0]: 'web' is placed twice: first at line 3 (nodes.\"10.0.0.1\"[0]); an application runs in one place"
    );
    one(&e, "deployment.yml:5:7: nodes.n3: expected a list of application names (write [] for none), got \"db\"");
    assert_eq!(e.len(), 3, "{e:#?}");
}

#[test]
fn an_app_both_pinned_and_anywhere_is_placed_twice() {
    let app = "version: 1\napplications:\n  db: {image: x}\n";
    let e = errors("version: 1\nnodes: {n1: [db]}\nanywhere: [db]\n", app);
    one(&e, "deployment.yml:3:12: anywhere[0]: 'db' is placed twice");
}

#[test]
fn links_must_lead_to_an_application() {
    let app = r#"version: 1
applications:
  web:
    image: x
    links: [{local_port: 5432, remote_port: 5433, alias: db}]
  a: {image: x, ports: [{internal: 1, external: 9000}]}
  b: {image: x, ports: [{internal: 1, external: 9001, protocol: udp}]}
  c:
    image: x
    links: [{local_port: 1, remote_port: 9001, alias: b}]
"#;
    let e = errors(&anywhere(&["web", "a", "b", "c"]), app);
    one(&e, "application.yml:5:45: applications.web.links[0].remote_port: no application publishes external port 5433");
    one(
        &e,
        "application.yml:10:42: applications.c.links[0].remote_port: external port 9001 is published only as UDP (by 'b'); a link's remote_port is a TCP port (links give Docker's ALIAS_PORT_N_TCP variables)",
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    let compose = "services:\n  web:\n    image: x\n    links: [\"dbx:db\", cache, dns]\n  db:\n    image: x\n    ports: [\"5432:5432\"]\n  cache:\n    image: x\n  dns:\n    image: x\n    ports: [\"53:53/udp\"]\n";
    let e = errors(&anywhere(&["web", "db", "cache", "dns"]), compose);
    one(&e, "application.yml:4:13: services.web.links[0]: link to unknown service 'dbx' (did you mean 'db'?)");
    one(&e, "services.web.links[1]: 'cache' publishes no ports");
    one(&e, "application.yml:4:30: services.web.links[2]: 'dns' publishes only UDP ports, so a link to it gives nothing");
}

/// A compose link gives the target's TCP ports only: link variables are
/// `ALIAS_PORT_N_TCP`.
#[test]
fn compose_links_skip_udp_ports() {
    let compose = "services:\n  web:\n    image: x\n    links: [dns]\n  dns:\n    image: x\n    ports: [\"53:5353/udp\", \"8053:53\"]\n";
    let c = ok(&anywhere(&["web", "dns"]), compose);
    assert_eq!(
        c.applications["web"].links,
        [Link {
            alias: "dns".into(),
            local_port: 53,
            remote_port: 8053,
            app: "dns".into()
        }]
    );
    assert_eq!(
        c.applications["dns"].ports,
        [
            PortMapping {
                internal: 5353,
                external: 53,
                protocol: Protocol::Udp
            },
            PortMapping {
                internal: 53,
                external: 8053,
                protocol: Protocol::Tcp
            }
        ]
    );
}

#[test]
fn mountpoints_must_be_absolute() {
    let app =
        "version: 1\napplications:\n  db:\n    image: x\n    volume: {mountpoint: var/lib/db}\n";
    let e = errors(&anywhere(&["db"]), app);
    one(&e, "application.yml:5:26: applications.db.volume.mountpoint: mountpoint 'var/lib/db' is not an absolute path");
    let e = errors(&anywhere(&["db"]), "db:\n  image: x\n  volumes: [data]\n");
    one(
        &e,
        "db.volumes[0]: mountpoint 'data' is not an absolute path",
    );
}

#[test]
fn the_fence_mountpoint_is_reserved() {
    let app =
        "version: 1\napplications:\n  db:\n    image: x\n    volume: {mountpoint: /.flocker/db}\n";
    let e = errors(&anywhere(&["db"]), app);
    one(&e, "application.yml:5:26: applications.db.volume.mountpoint: mountpoint '/.flocker/db' is reserved: the cluster mounts its fence at /.flocker");
    let e = errors(
        &anywhere(&["db"]),
        "db:\n  image: x\n  volumes: [/.flocker]\n",
    );
    one(
        &e,
        "application.yml:3:13: db.volumes[0]: mountpoint '/.flocker' is reserved",
    );
}

#[test]
fn preserve_setuid_is_read_and_written_back_only_when_true() {
    let app = "version: 1\napplications:\n  db:\n    image: x\n    volume: {mountpoint: /d, preserve_setuid: true}\n  web:\n    image: x\n    volume: {mountpoint: /w}\n";
    let c = ok(&anywhere(&["db", "web"]), app);
    let volume = |name: &str| c.applications[name].volume.clone().unwrap();
    assert!(volume("db").preserve_setuid);
    assert!(!volume("web").preserve_setuid);
    let (deployment, application) = to_files(&c);
    assert_eq!(
        application.matches("preserve_setuid: true").count(),
        1,
        "{application}"
    );
    assert!(
        !application.contains("preserve_setuid: false"),
        "{application}"
    );
    assert_eq!(ok(&deployment, &application), c);
    let app = "version: 1\napplications:\n  db:\n    image: x\n    volume: {mountpoint: /d, preserve_setuid: yes}\n";
    let e = errors(&anywhere(&["db"]), app);
    one(&e, "application.yml:5:47: applications.db.volume.preserve_setuid: expected true or false, got \"yes\"");
}

#[test]
fn volume_replicas_and_max_lag_in_both_forms() {
    let app = "version: 1\napplications:\n  db:\n    image: x\n    volume: {mountpoint: /d, replicas: 3, max_lag: 5s}\n  web:\n    image: x\n    volume: {mountpoint: /w}\n";
    let c = ok(&anywhere(&["db", "web"]), app);
    let volume = |name: &str| c.applications[name].volume.clone().unwrap();
    assert_eq!((volume("db").replicas, volume("db").max_lag_ms), (3, 5_000));
    assert_eq!(
        (volume("web").replicas, volume("web").max_lag_ms),
        (1, VolumeSpec::DEFAULT_MAX_LAG_MS),
        "one copy and a 10 s objective unless asked"
    );
    let (deployment, application) = to_files(&c);
    assert!(application.contains("replicas: 3"), "{application}");
    assert!(application.contains("max_lag: 5s"), "{application}");
    assert_eq!(
        application.matches("replicas:").count(),
        1,
        "defaults left out"
    );
    assert_eq!(ok(&deployment, &application), c);

    let compose = "services:\n  db:\n    image: x\n    volumes: [/d]\n    x-flocker: {replicas: 2, max_lag: 30s}\n";
    let c = ok(&anywhere(&["db"]), compose);
    let v = c.applications["db"].volume.clone().unwrap();
    assert_eq!((v.replicas, v.max_lag_ms), (2, 30_000));

    let bad = "version: 1\napplications:\n  db:\n    image: x\n    volume: {mountpoint: /d, replicas: 0, max_lag: 500ms}\n";
    let e = errors(&anywhere(&["db"]), bad);
    one(
        &e,
        "application.yml:5:40: applications.db.volume.replicas: expected a number of copies 1-5",
    );
    one(&e, "application.yml:5:52: applications.db.volume.max_lag: expected a duration between 1s and 1h, got \"500ms\"");
    let bad = "version: 1\napplications:\n  db:\n    image: x\n    volume: {mountpoint: /d, max_lag: ten}\n";
    one(
        &errors(&anywhere(&["db"]), bad),
        "applications.db.volume.max_lag: expected a duration like 500ms, 10s, 2m or 1h",
    );
    let no_volume = "services:\n  db:\n    image: x\n    x-flocker: {replicas: 2}\n";
    one(
        &errors(&anywhere(&["db"]), no_volume),
        "application.yml:4:5: services.db.x-flocker: replicas are copies of the service's volume",
    );
    let unknown =
        "services:\n  db:\n    image: x\n    volumes: [/d]\n    x-flocker: {replica: 2}\n";
    one(
        &errors(&anywhere(&["db"]), unknown),
        "services.db.x-flocker.replica",
    );
}

/// `count` copies of `item(i)` under an application's `key`.
fn many(key: &str, count: usize, item: impl Fn(usize) -> String) -> String {
    let items: Vec<String> = (0..count).map(item).collect();
    format!(
        "version: 1\napplications:\n  a:\n    image: x\n    {key}: [{}]\n",
        items.join(", ")
    )
}

#[test]
fn configuration_values_have_limits() {
    use super::names::{
        MAX_APPS, MAX_COMMAND_ARGS, MAX_CONSTRAINTS, MAX_ENV_NAME, MAX_ENV_VALUE, MAX_ENV_VARS,
    };
    // Applications: the first one over the limit is named.
    let mut app = String::from("version: 1\napplications:\n");
    for i in 0..=MAX_APPS {
        app.push_str(&format!("  a{i}: {{image: x}}\n"));
    }
    let e = errors("version: 1\nnodes: {}\n", &app);
    one(
        &e,
        &format!("application.yml:{}:3: applications.a{MAX_APPS}: {} applications, more than the limit of {MAX_APPS}", MAX_APPS + 3, MAX_APPS + 1),
    );

    // Environment: names, values and how many.
    let long_name = "N".repeat(MAX_ENV_NAME + 1);
    // YAML allows keys this long only in the explicit `? key` form.
    let app = format!("version: 1\napplications:\n  a:\n    image: x\n    environment:\n      ? {long_name}\n      : v\n      OK: \"{}\"\n", "v".repeat(MAX_ENV_VALUE + 1));
    let e = errors(&anywhere(&["a"]), &app);
    one(&e, "application.yml:6:9: applications.a.environment.NNNN");
    one(
        &e,
        &format!(
            "an environment variable name of {} bytes is longer than the limit of {MAX_ENV_NAME}",
            MAX_ENV_NAME + 1
        ),
    );
    one(&e, &format!("application.yml:8:11: applications.a.environment.OK: an environment variable value of {} bytes is longer than the limit of {MAX_ENV_VALUE}", MAX_ENV_VALUE + 1));
    // The fig form's list of KEY=VALUE strings.
    let vars: Vec<String> = (0..=MAX_ENV_VARS).map(|i| format!("V{i}=x")).collect();
    let app = format!("a:\n  image: x\n  environment: [{}]\n", vars.join(", "));
    let e = errors(&anywhere(&["a"]), &app);
    one(&e, "application.yml:3:");
    one(&e, &format!("a.environment[{MAX_ENV_VARS}]: {} environment variables, more than the limit of {MAX_ENV_VARS}", MAX_ENV_VARS + 1));

    // Command arguments and constraints.
    let e = errors(
        &anywhere(&["a"]),
        &many("command", MAX_COMMAND_ARGS + 1, |_| "x".into()),
    );
    one(&e, &format!("application.yml:5:14: applications.a.command: the command has {} arguments, more than the limit of {MAX_COMMAND_ARGS}", MAX_COMMAND_ARGS + 1));
    let e = errors(
        &anywhere(&["a"]),
        &many("constraints", MAX_CONSTRAINTS + 1, |i| format!("k{i}=v")),
    );
    one(&e, &format!("applications.a.constraints[{MAX_CONSTRAINTS}]: {} constraints, more than the limit of {MAX_CONSTRAINTS}", MAX_CONSTRAINTS + 1));
    let e = errors(
        &anywhere(&["a"]),
        &many("constraints", 1, |_| format!("{}=v", "k".repeat(64))),
    );
    one(
        &e,
        "application.yml:5:19: applications.a.constraints[0]: invalid label key",
    );
    let e = errors(
        &anywhere(&["a"]),
        &many("constraints", 1, |_| format!("k={}", "v".repeat(254))),
    );
    one(
        &e,
        "applications.a.constraints[0]: invalid value for label 'k': at most 253",
    );

    // Image references.
    let app = format!(
        "version: 1\napplications:\n  a:\n    image: reg.io/{}\n",
        "a/".repeat(600)
    );
    let e = errors(&anywhere(&["a"]), &app);
    one(&e, "application.yml:4:12: applications.a.image: the image reference is 1207 bytes, longer than the limit of 1024");
    let app = format!(
        "version: 1\napplications:\n  a:\n    image: x@sha256:{}\n",
        "a".repeat(129)
    );
    let e = errors(&anywhere(&["a"]), &app);
    one(&e, "applications.a.image: invalid image");
}

#[test]
fn alias_expansion_is_charged_for_the_text_it_makes() {
    // "Billion laughs" with long strings: 1 MB of file, one 10 KB string and
    // 100,000 aliases to it, would expand to 1 GB. It is refused at the alias
    // that crosses the budget, before that copy is made.
    let mut app = format!(
        "version: 1\napplications:\n  a:\n    image: x\n    environment: {{V: &v \"{}\"}}\n    command: [",
        "x".repeat(10_000)
    );
    for _ in 0..100_000 {
        app.push_str("*v, ");
    }
    app.push_str("]\n");
    let e = errors(&anywhere(&["a"]), &app);
    let error = one(&e, "MiB of text");
    assert!(
        error.starts_with("application.yml:6:") && error.contains("applications.a.command["),
        "{error}"
    );
    assert!(error.contains("expands to more than 16 MiB"), "{error}");
}

#[test]
fn an_external_port_belongs_to_one_application_in_the_cluster() {
    let app = r#"version: 1
applications:
  web: {image: x, ports: [{internal: 80, external: 8080}]}
  api: {image: x, ports: [{internal: 8000, external: 8080}]}
  other: {image: x, ports: [{internal: 80, external: 8080}]}
"#;
    // Wherever they are placed: every node answers on every external port.
    for dep in [
        "version: 1\nnodes:\n  n1: [web, api]\n  n2: [other]\n",
        "version: 1\nnodes:\n  n1: [web]\n  n2: [api]\nanywhere: [other]\n",
        "version: 1\nnodes: {}\n",
    ] {
        let e = errors(dep, app);
        assert_eq!(
            e,
            [
                "application.yml:4:54: applications.api.ports[0].external: external port 8080 is also published by 'web'; external ports are cluster-wide: every node answers on them",
                "application.yml:5:54: applications.other.ports[0].external: external port 8080 is also published by 'web'; external ports are cluster-wide: every node answers on them",
            ],
            "{dep}"
        );
    }

    // A UDP port and a TCP port of the same number are different ports.
    let c = ok(
        &anywhere(&["a", "b", "w"]),
        "version: 1\napplications:\n  a: {image: x, ports: [{internal: 53, external: 53}]}\n  b: {image: x, ports: [{internal: 53, external: 53, protocol: udp}]}\n  w: {image: x, ports: [{internal: 1, external: 80, protocol: udp}, {internal: 2, external: 80}]}\n",
    );
    assert_eq!(
        c.applications["w"].ports,
        [
            PortMapping {
                internal: 2,
                external: 80,
                protocol: Protocol::Tcp
            },
            PortMapping {
                internal: 1,
                external: 80,
                protocol: Protocol::Udp
            }
        ]
    );
    let e = errors(
        &anywhere(&["a", "b"]),
        "version: 1\napplications:\n  a: {image: x, ports: [{internal: 53, external: 53, protocol: udp}]}\n  b: {image: x, ports: [{internal: 54, external: 53, protocol: udp}]}\n",
    );
    assert_eq!(
        e,
        ["application.yml:4:50: applications.b.ports[0].external: external port 53/udp is also published by 'a'; external ports are cluster-wide: every node answers on them"]
    );

    let e = errors(
        &anywhere(&["w"]),
        "version: 1\napplications:\n  w: {image: x, ports: [{internal: 1, external: 80}, {internal: 2, external: 80}]}\n",
    );
    assert_eq!(
        e,
        ["application.yml:3:78: applications.w.ports[1].external: external port 80 is published twice by 'w'"]
    );
    let e = errors(
        &anywhere(&["a", "b"]),
        "version: 1\napplications:\n  a: {image: x, ports: [{internal: 1, external: 80}]}\n  b: {image: x, ports: [{internal: 1, external: 80}, {internal: 2, external: 80}]}\n",
    );
    assert_eq!(
        e,
        [
            "application.yml:4:49: applications.b.ports[0].external: external port 80 is also published by 'a'; external ports are cluster-wide: every node answers on them",
            "application.yml:4:78: applications.b.ports[1].external: external port 80 is published twice by 'b'",
        ]
    );
}

/// The clash is reported where the port is written the second time in the
/// file, whichever application's name sorts first.
#[test]
fn a_port_clash_in_compose_form_is_placed_in_the_file() {
    let compose = "services:\n  zed:\n    image: x\n    ports: [\"8080:80\"]\n  api:\n    image: x\n    ports: [\"9000:9000\", \"8080:8000/tcp\", \"8080:8000/udp\"]\n";
    let e = errors(&anywhere(&["zed", "api"]), compose);
    assert_eq!(
        e,
        ["application.yml:7:26: services.api.ports[1]: external port 8080 is also published by 'zed'; external ports are cluster-wide: every node answers on them"]
    );
}

#[test]
fn a_port_protocol_is_tcp_or_udp() {
    let app = "version: 1\napplications:\n  w:\n    image: x\n    ports:\n    - {internal: 1, external: 1, protocol: sctp}\n    - {internal: 2, external: 2, protocol: UDP}\n    - {internal: 3, external: 3, protocol: [udp]}\n    - {internal: 4, external: 4, proto: udp}\n";
    let e = errors(&anywhere(&["w"]), app);
    assert_eq!(
        e,
        [
            "application.yml:6:44: applications.w.ports[0].protocol: expected tcp or udp, got \"sctp\"",
            "application.yml:7:44: applications.w.ports[1].protocol: expected tcp or udp, got \"UDP\"",
            "application.yml:8:44: applications.w.ports[2].protocol: expected tcp or udp, got a list",
            "application.yml:9:34: applications.w.ports[3].proto: unknown key 'proto'; expected one of: internal, external, protocol",
        ]
    );
}

#[test]
fn sizes_are_checked() {
    let app = "version: 1\napplications:\n  a:\n    image: x\n    mem_limit: 10Q\n    volume: {mountpoint: /d, maximum_size: 0}\n";
    let e = errors(&anywhere(&["a"]), app);
    one(&e, "application.yml:5:16: applications.a.mem_limit: expected bytes or a size like 500M or 2.5G");
    one(
        &e,
        "applications.a.volume.maximum_size: must be more than 0 bytes, got \"0\"",
    );
    let e = errors(&anywhere(&["a"]), "a:\n  image: x\n  mem_limit: [1]\n");
    one(
        &e,
        "a.mem_limit: expected bytes or a size like 500M or 2.5G, got a list",
    );
}

#[test]
fn versions_are_required_and_checked() {
    let app = "version: 1\napplications:\n  a: {image: x}\n";
    let e = errors("nodes: {n1: [a]}\n", app);
    one(&e, "deployment.yml:1:1: missing 'version'");
    let e = errors("version: 2\nnodes: {n1: [a]}\n", app);
    one(
        &e,
        "deployment.yml:1:10: version: expected version 1, got \"2\"",
    );
    let e = errors(
        &anywhere(&["a"]),
        "version: \"1\"\napplications:\n  a: {image: x}\n",
    );
    one(
        &e,
        "version: expected version 1, got the string \"1\" (write the number without quotes)",
    );
    let e = errors(&anywhere(&["a"]), "applications:\n  a: {image: x}\n");
    one(&e, "application.yml:1:1: missing 'version'");
    let e = errors(
        &anywhere(&["a"]),
        "version: \"1.0\"\nservices:\n  a: {image: x}\n",
    );
    one(
        &e,
        "version: unsupported compose file version the string \"1.0\"",
    );
    let e = errors(&anywhere(&["a"]), "version: 1\n");
    one(&e, "missing 'applications'");
}

#[test]
fn images_must_be_given_and_valid() {
    let app = "version: 1\napplications:\n  a: {image: \"\"}\n  b: {image: \"Nginx\"}\n  c: {ports: []}\n";
    let e = errors(&anywhere(&["a", "b", "c"]), app);
    one(
        &e,
        "application.yml:3:14: applications.a.image: the image is empty",
    );
    one(&e, "applications.b.image: invalid image 'Nginx'");
    one(&e, "application.yml:5:6: applications.c: missing 'image'");
}

#[test]
fn application_names_are_checked() {
    let app =
        "version: 1\napplications:\n  Web: {image: x}\n  \"a b\": {image: x}\n  ok_1: {image: x}\n";
    let e = errors("version: 1\nnodes: {}\n", app);
    one(
        &e,
        "application.yml:3:3: applications.Web: invalid application name 'Web'",
    );
    one(&e, "applications.\"a b\": invalid application name 'a b'");
    assert_eq!(e.len(), 2, "{e:#?}");
}

#[test]
fn duplicate_keys_are_refused_anywhere() {
    let app = "version: 1\napplications:\n  a:\n    image: x\n    image: y\n  a: {image: z}\n";
    let e = errors(&anywhere(&["a"]), app);
    one(
        &e,
        "application.yml:5:5: applications.a.image: duplicate key 'image' (first at line 4)",
    );
    one(
        &e,
        "application.yml:6:3: applications.a: duplicate key 'a' (first at line 3)",
    );
    let e = errors(
        "version: 1\nnodes:\n  n1: [a]\n  n1: [a]\n",
        "a: {image: x}\n",
    );
    one(
        &e,
        "deployment.yml:4:3: nodes.n1: duplicate key 'n1' (first at line 3)",
    );
}

#[test]
fn restart_policies() {
    let app = "version: 1\napplications:\n  a:\n    image: x\n    restart_policy: {name: sometimes}\n  b:\n    image: x\n    restart_policy: {name: on-failure, maximum_retry_count: 0}\n  c:\n    image: x\n    restart_policy: {}\n";
    let e = errors(&anywhere(&["a", "b", "c"]), app);
    one(&e, "applications.a.restart_policy.name: expected never, always or on-failure, got \"sometimes\"");
    one(&e, "applications.b.restart_policy.maximum_retry_count: expected a retry count of at least 1, got \"0\"");
    one(&e, "applications.c.restart_policy: missing 'name'");
    let e = errors(&anywhere(&["a"]), "a:\n  image: x\n  restart: sometimes\n");
    one(
        &e,
        "a.restart: expected no, always, on-failure or on-failure:N",
    );
}

#[test]
fn constraints_and_commands() {
    let app = "version: 1\napplications:\n  a:\n    image: x\n    constraints: [disk=ssd, disk=hdd, zone, zone!=a, zone!=a]\n    command: []\n";
    let e = errors(&anywhere(&["a"]), app);
    one(
        &e,
        "constraints[1]: constraint 'disk=hdd' contradicts 'disk=ssd'",
    );
    one(
        &e,
        "constraints[2]: constraint 'zone' is neither label=value nor label!=value",
    );
    one(&e, "constraints[4]: constraint 'zone!=a' is given twice");
    one(&e, "applications.a.command: the command is empty");
    let e = errors(
        &anywhere(&["a"]),
        "version: 1\napplications:\n  a: {image: x, command: \"echo hi\"}\n",
    );
    one(
        &e,
        "applications.a.command: expected a list of strings, got the string \"echo hi\"",
    );
}

#[test]
fn environment_values_are_strings() {
    let app = "version: 1\napplications:\n  a:\n    image: x\n    environment: {DEBUG: true, EMPTY: , \"A=B\": x}\n";
    let e = errors(&anywhere(&["a"]), app);
    one(
        &e,
        "environment.DEBUG: expected a string, got true (quote it: \"true\")",
    );
    one(&e, "environment.EMPTY: expected a string, got nothing");
    one(
        &e,
        "environment.\"A=B\": invalid environment variable name 'A=B'",
    );
}

#[test]
fn every_error_in_both_files_is_reported_in_order() {
    let app = "version: 1\napplications:\n  web:\n    image: \"\"\n    ports: [{internal: 0, external: 80}]\n  db: {image: x, volume: {mountpoint: rel}}\n";
    let dep = "version: 1\nnodes:\n  n1: [web, nope]\n  n2: [web]\n";
    let e = errors(dep, app);
    let files: Vec<&str> = e.iter().map(|e| e.split(':').next().unwrap()).collect();
    assert_eq!(
        files,
        [
            "deployment.yml",
            "deployment.yml",
            "application.yml",
            "application.yml",
            "application.yml"
        ],
        "{e:#?}"
    );
    let lines: Vec<u32> = e
        .iter()
        .map(|e| e.split(':').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(lines, [3, 4, 4, 5, 6]);
}

#[test]
fn forms_are_told_apart_and_misspelt_tops_explained() {
    let e = errors(
        &anywhere(&["a"]),
        "version: 1\naplications:\n  a: {image: x}\n",
    );
    one(
        &e,
        "aplications: unknown key 'aplications' (did you mean 'applications'?)",
    );
    let e = errors(&anywhere(&["a"]), "servics:\n  a: {image: x}\n");
    one(
        &e,
        "servics: 'servics' is read as a service name (did you mean 'services'?)",
    );
    let e = errors(&anywhere(&["a"]), "- a\n- b\n");
    one(&e, "application.yml:1:1: expected a map: 'version' and 'applications', 'services', or service names, got a list");
    let e = errors(&anywhere(&["a"]), "# nothing but a comment\n");
    one(&e, "application.yml:1:1: the file is empty");
}

#[test]
fn swapped_files_are_recognised() {
    let e = errors(EXAMPLE_APPLICATION, EXAMPLE_DEPLOYMENT);
    assert_eq!(
        e,
        [
            "deployment.yml:4:1: this is an application file, not a deployment file (the order is DEPLOYMENT APPLICATION)",
            "application.yml:3:1: this is a deployment file, not an application file (the order is DEPLOYMENT APPLICATION)",
        ]
    );
}

#[test]
fn oversized_text_is_refused_before_parsing() {
    let big = format!("version: 1\n#{}\n", "x".repeat(MAX_CONFIG_BYTES));
    let e = errors(&big, "a: {image: x}\n");
    one(&e, "deployment.yml: the file is larger than 4 MiB");
}

#[test]
fn load_names_unreadable_and_non_utf8_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yml");
    let latin1 = dir.path().join("latin1.yml");
    std::fs::write(&latin1, b"version: 1\nnodes:\n  n1: [caf\xe9]\n").unwrap();
    let e = load(&latin1, &missing).unwrap_err();
    let e: Vec<String> = e.iter().map(ToString::to_string).collect();
    assert_eq!(
        e,
        [
            format!("{}:3:11: the file is not UTF-8 text", latin1.display()),
            format!(
                "{}: cannot read: No such file or directory (os error 2)",
                missing.display()
            ),
        ]
    );
}

/// No input makes the parsers panic: the example files cut, spliced and
/// sprinkled with YAML's special characters, deterministically.
#[test]
fn mangled_inputs_never_panic() {
    let sources = [EXAMPLE_APPLICATION, EXAMPLE_COMPOSE, EXAMPLE_DEPLOYMENT];
    let specials = [
        "", ":", "- ", "{", "}", "[", "]", "&a ", "*a", "!!", "? ", "|\n", ">\n", "\"", "'", "#",
        "\n", "\t", "%", "@", "---\n", "<<: ", "\u{feff}", "é",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |bound: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % bound as u64) as usize
    };
    for round in 0..1500 {
        let base = sources[round % sources.len()];
        let mut text: String = base.to_string();
        for _ in 0..1 + next(4) {
            let mut at = next(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            match next(3) {
                0 => text.insert_str(at, specials[next(specials.len())]),
                1 => {
                    let mut end = (at + next(20)).min(text.len());
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    text.replace_range(at..end, "");
                }
                _ => text.truncate(at),
            }
        }
        let _ = parse(&text, "d", EXAMPLE_APPLICATION, "a");
        let _ = parse(EXAMPLE_DEPLOYMENT, "d", &text, "a");
    }
}

/// Files written when two applications could share an external port name
/// a link's application with `app`; it is still read, and checked.
#[test]
fn a_link_may_still_name_its_application() {
    let app = r#"version: 1
applications:
  a: {image: x, ports: [{internal: 1, external: 9000}]}
  b: {image: x, ports: [{internal: 2, external: 9002}, {internal: 3, external: 9001}]}
  web:
    image: x
    links:
    - {local_port: 80, remote_port: 9002, alias: b, app: b}
    - {local_port: 81, remote_port: 9001, alias: b}
"#;
    let c = ok(&anywhere(&["web"]), app);
    let leads_to: Vec<(&str, u16)> = c.applications["web"]
        .links
        .iter()
        .map(|l| (l.app.as_str(), l.remote_port))
        .collect();
    assert_eq!(leads_to, [("b", 9002), ("b", 9001)]);

    let bad = r#"version: 1
applications:
  a: {image: x, ports: [{internal: 1, external: 9000}, {internal: 2, external: 9002, protocol: udp}]}
  web:
    image: x
    links:
    - {local_port: 80, remote_port: 9000, alias: x, app: aa}
    - {local_port: 81, remote_port: 9001, alias: y, app: a}
    - {local_port: 82, remote_port: 9000, alias: z, app: [a]}
    - {local_port: 83, remote_port: 9002, alias: u, app: a}
"#;
    let e = errors(&anywhere(&["web"]), bad);
    one(
        &e,
        "application.yml:7:58: applications.web.links[0].app: link to unknown application 'aa' (did you mean 'a'?)",
    );
    one(
        &e,
        "application.yml:8:37: applications.web.links[1].remote_port: 'a' does not publish external port 9001",
    );
    one(
        &e,
        "applications.web.links[2].app: expected an application name, got a list",
    );
    one(
        &e,
        "application.yml:10:37: applications.web.links[3].remote_port: 'a' publishes external port 9002 only as UDP; a link's remote_port is a TCP port",
    );
    assert_eq!(e.len(), 4, "{e:#?}");
}
