//! The Docker runtime against the real local engine (issue 4).
//!
//! Every setting the adapter sends is checked with the `docker` CLI, so the
//! adapter is judged by something other than itself. There is no registry:
//! the image is built locally from the host's busybox-static. These tests
//! fail, never skip, when no engine answers: `.ci/run` starts one.
//! Containers get unique names and labels and are removed by a guard even
//! when a test fails.

use flocker::runtime::{
    build_busybox_image, Bind, ContainerEvent, ContainerId, ContainerRuntime, ContainerRuntimeExt,
    ContainerSpec, ContainerState, DockerRuntime, DockerTimeouts, EventAction, EventStream, Labels,
    PortBinding, Protocol, RuntimeError, TEST_IMAGE,
};
use futures::StreamExt;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

static IMAGE_ID: OnceCell<String> = OnceCell::const_new();

/// The engine, which must answer: a test run without Docker is a failure.
async fn engine() -> DockerRuntime {
    let rt = DockerRuntime::local();
    if let Err(e) = rt.ping().await {
        panic!(
            "these tests need a Docker engine and none answered: {e}. \
             .ci/run starts Debian's dockerd."
        );
    }
    rt
}

/// Builds the test image once per test binary.
async fn image(rt: &DockerRuntime) -> String {
    IMAGE_ID
        .get_or_init(|| async {
            let t = Instant::now();
            let id = build_busybox_image(rt, TEST_IMAGE)
                .await
                .unwrap_or_else(|e| panic!("building {TEST_IMAGE}: {e}"));
            eprintln!("built {TEST_IMAGE} ({id}) in {:?}", t.elapsed());
            id
        })
        .await
        .clone()
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Removes its containers with `docker rm -f` when dropped, test passed or not.
struct Cleanup(Vec<String>);

impl Cleanup {
    fn new() -> Self {
        Cleanup(Vec::new())
    }

    /// Registers a name before the container exists, so a panic between
    /// create and registration cannot leak it.
    fn name(&mut self, name: String) -> String {
        self.0.push(name.clone());
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("docker")
                .arg("rm")
                .arg("-f")
                .args(&self.0)
                .output();
        }
    }
}

fn docker_cli(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running docker {args:?}: {e}"))
}

/// `docker inspect <name>` as JSON, or `None` if Docker does not know it.
fn cli_inspect(name: &str) -> Option<Value> {
    let out = docker_cli(&["inspect", "--type", "container", name]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("docker inspect prints JSON");
    v.get(0).cloned()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn spec(name: &str, labels: Labels, command: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        image: TEST_IMAGE.to_string(),
        entrypoint: None,
        command: Some(vec!["sh".into(), "-c".into(), command.into()]),
        labels,
        ..Default::default()
    }
}

fn binding(ip: &str, host_port: u16) -> PortBinding {
    PortBinding {
        host_ip: ip.parse().unwrap(),
        host_port,
        container_port: 80,
        protocol: Protocol::Tcp,
    }
}

/// A TCP port free on `ip` right now.
fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .expect("bind an ephemeral port")
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(ip: &str, port: u16, path: &str) -> std::io::Result<String> {
    let addr = format!("{ip}:{port}").parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut page = String::new();
    s.read_to_string(&mut page)?;
    Ok(page)
}

async fn wait_for<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn next_event(events: &mut EventStream) -> ContainerEvent {
    match tokio::time::timeout(Duration::from_secs(20), events.next()).await {
        Err(_) => panic!("no container event within 20s"),
        Ok(None) => panic!("the event stream ended"),
        Ok(Some(Err(e))) => panic!("the event stream failed: {e}"),
        Ok(Some(Ok(e))) => e,
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn negotiates_down_to_the_engines_api_version() {
    let rt = engine().await;
    let out = docker_cli(&["version", "--format", "{{.Server.APIVersion}}"]);
    let server = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !server.is_empty(),
        "docker version: {out:?}"
    );
    let negotiated = rt.api_version().await.unwrap();
    let pair = |v: &str| -> (u32, u32) {
        let (a, b) = v.split_once('.').expect("major.minor");
        (a.parse().unwrap(), b.parse().unwrap())
    };
    // bollard 0.21 speaks 1.53; an older engine must be met at its own.
    assert_eq!(
        pair(&negotiated),
        pair(&server).min((1, 53)),
        "negotiated {negotiated}, server {server}"
    );
}

#[tokio::test]
async fn create_and_start_apply_every_setting() {
    let rt = engine().await;
    let image_id = image(&rt).await;
    let mut cleanup = Cleanup::new();
    let name = cleanup.name(unique("flocker-rt-settings"));
    let run_label = unique("run");

    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in"), "from the host\n").unwrap();
    let config = tempfile::tempdir().unwrap();
    let host_port = free_port("127.0.0.2");

    let mut s = spec(
        &name,
        labels(&[("flocker.test.run", &run_label), ("flocker.node", "n1")]),
        // Proves env, both binds (one read-only) and the port from inside.
        "echo hi; echo \"$GREETING\" > /data/env; cp /data/in /data/copied; \
         if touch /config/x 2>/dev/null; then echo rw > /data/ro; else echo ro > /data/ro; fi; \
         exec httpd -f -p 80 -h /data",
    );
    s.env.insert("GREETING".into(), "hello world".into());
    s.ports.push(binding("127.0.0.2", host_port));
    s.binds.push(Bind {
        host_path: data.path().to_str().unwrap().into(),
        container_path: "/data".into(),
        read_only: false,
    });
    s.binds.push(Bind {
        host_path: config.path().to_str().unwrap().into(),
        container_path: "/config".into(),
        read_only: true,
    });
    s.mem_limit = Some(64 * 1024 * 1024);
    s.cpu_shares = Some(512);

    let id = rt.run(&s).await.unwrap();

    let v = cli_inspect(&name).expect("docker inspect finds the container");
    assert_eq!(v["Id"], id.as_str());
    assert_eq!(v["Image"], image_id.as_str());
    assert_eq!(v["Config"]["Image"], TEST_IMAGE);
    assert_eq!(strings(&v["Config"]["Cmd"])[..2], ["sh", "-c"]);
    let env = strings(&v["Config"]["Env"]);
    assert!(env.contains(&"GREETING=hello world"), "{env:?}");
    assert_eq!(
        v["Config"]["Labels"]["flocker.test.run"],
        run_label.as_str()
    );
    assert_eq!(v["Config"]["Labels"]["flocker.node"], "n1");
    assert!(v["Config"]["ExposedPorts"]["80/tcp"].is_object());
    let hc = &v["HostConfig"];
    assert_eq!(
        hc["RestartPolicy"]["Name"], "no",
        "Docker must never restart: {hc}"
    );
    assert_eq!(hc["Memory"], 64 * 1024 * 1024);
    assert_eq!(hc["CpuShares"], 512);
    assert_eq!(hc["PortBindings"]["80/tcp"][0]["HostIp"], "127.0.0.2");
    assert_eq!(
        hc["PortBindings"]["80/tcp"][0]["HostPort"],
        host_port.to_string()
    );
    assert_eq!(
        strings(&hc["Binds"]),
        [
            format!("{}:/data", data.path().display()),
            format!("{}:/config:ro", config.path().display())
        ]
    );
    let mounts = v["Mounts"].as_array().unwrap();
    let rw_of = |dest: &str| {
        mounts
            .iter()
            .find(|m| m["Destination"] == dest)
            .map(|m| m["RW"].clone())
    };
    assert_eq!(rw_of("/data"), Some(Value::Bool(true)));
    assert_eq!(rw_of("/config"), Some(Value::Bool(false)));
    assert_eq!(v["State"]["Running"], true);
    assert_eq!(
        v["NetworkSettings"]["Ports"]["80/tcp"][0]["HostIp"],
        "127.0.0.2"
    );

    // The settings work, not only read back: the container saw its env,
    // wrote through the bind, could not write the read-only bind, and serves
    // on the host ip and port it was given.
    let ro = wait_for("the container's probes", Duration::from_secs(20), || {
        std::fs::read_to_string(data.path().join("ro")).ok()
    })
    .await;
    assert_eq!(ro, "ro\n");
    assert_eq!(
        std::fs::read_to_string(data.path().join("copied")).unwrap(),
        "from the host\n"
    );
    assert_eq!(
        std::fs::read_to_string(data.path().join("env")).unwrap(),
        "hello world\n"
    );
    let page = wait_for(
        "httpd on the published port",
        Duration::from_secs(20),
        || {
            http_get("127.0.0.2", host_port, "/in")
                .ok()
                .filter(|p| p.contains("from the host"))
        },
    )
    .await;
    assert!(
        page.lines().next().unwrap_or("").contains(" 200 "),
        "{page}"
    );
    assert!(
        http_get("127.0.0.3", host_port, "/in").is_err(),
        "the port is published on 127.0.0.2 only"
    );
    let logs = docker_cli(&["logs", &name]);
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout).lines().next(),
        Some("hi")
    );

    // The adapter's own view agrees with the CLI's.
    let info = rt.inspect(&id).await.unwrap().expect("inspect finds it");
    assert_eq!(info.name, name);
    assert_eq!(info.state, ContainerState::Running);
    assert_eq!(info.image, TEST_IMAGE);
    assert_eq!(info.image_id, image_id);
    assert_eq!(info.labels["flocker.test.run"], run_label);
    assert_eq!(info.exit_code, None);
    assert_eq!(info.restart_count, 0);
    assert!(info.started_at.is_some());
    assert_eq!(info.finished_at, None);

    // httpd as PID 1 has no SIGTERM handler: the grace runs out, SIGKILL.
    rt.stop(&id, Duration::from_secs(1)).await.unwrap();
    let info = rt.inspect(&id).await.unwrap().unwrap();
    assert_eq!(info.state, ContainerState::Exited);
    assert_eq!(info.exit_code, Some(137));
    assert!(info.finished_at > info.started_at);
    let v = cli_inspect(&name).unwrap();
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["RestartCount"], 0, "Docker restarted nothing");

    rt.remove(&id, false).await.unwrap();
    assert!(
        cli_inspect(&name).is_none(),
        "docker no longer knows {name}"
    );
}

#[tokio::test]
async fn list_returns_only_containers_with_every_label() {
    let rt = engine().await;
    image(&rt).await;
    let mut cleanup = Cleanup::new();
    let cluster = unique("cluster");
    let mine = labels(&[("flocker.cluster", &cluster), ("flocker.node", "n1")]);
    let other_node = labels(&[("flocker.cluster", &cluster), ("flocker.node", "n2")]);
    let a = cleanup.name(unique("flocker-rt-list-a"));
    let b = cleanup.name(unique("flocker-rt-list-b"));
    let c = cleanup.name(unique("flocker-rt-list-c"));
    let d = cleanup.name(unique("flocker-rt-list-d"));
    rt.run(&spec(&a, mine.clone(), "sleep 1000")).await.unwrap();
    // Created but never started: listing covers every state.
    rt.create(&spec(&b, mine.clone(), "sleep 1000"))
        .await
        .unwrap();
    rt.run(&spec(&c, other_node, "sleep 1000")).await.unwrap();
    rt.run(&spec(&d, Labels::new(), "sleep 1000"))
        .await
        .unwrap();

    let listed = rt.list(&mine).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|i| i.name.as_str()).collect();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort();
    assert_eq!(names, expected);
    let state_of = |n: &str| listed.iter().find(|i| i.name == n).map(|i| i.state.clone());
    assert_eq!(state_of(&a), Some(ContainerState::Running));
    assert_eq!(state_of(&b), Some(ContainerState::Created));

    let cluster_only = labels(&[("flocker.cluster", &cluster)]);
    assert_eq!(rt.list(&cluster_only).await.unwrap().len(), 3);
    let nobody = labels(&[("flocker.cluster", &unique("nobody"))]);
    assert!(rt.list(&nobody).await.unwrap().is_empty());
}

#[tokio::test]
async fn events_report_start_and_die_with_the_exit_code() {
    let rt = engine().await;
    image(&rt).await;
    let mut cleanup = Cleanup::new();
    let mark = unique("events");
    let filter = labels(&[("flocker.test.run", &mark)]);
    let mut events = rt.events(&filter).await.unwrap();

    // An unlabelled container's events must not reach this subscriber.
    let outsider = cleanup.name(unique("flocker-rt-outsider"));
    rt.run(&spec(&outsider, Labels::new(), "exit 0"))
        .await
        .unwrap();

    let name = cleanup.name(unique("flocker-rt-events"));
    let id = rt
        .run(&spec(&name, filter.clone(), "sleep 0.2; exit 7"))
        .await
        .unwrap();

    let mut seen = Vec::new();
    loop {
        let e = next_event(&mut events).await;
        assert_eq!(e.id, id, "only the labelled container: {e:?}");
        assert_eq!(e.labels.get("flocker.test.run"), Some(&mark));
        assert_eq!(e.name, name);
        let done = e.action == EventAction::Die;
        seen.push(e);
        if done {
            break;
        }
    }
    let actions: Vec<&EventAction> = seen.iter().map(|e| &e.action).collect();
    assert_eq!(
        actions,
        [&EventAction::Create, &EventAction::Start, &EventAction::Die]
    );
    assert_eq!(seen.last().unwrap().exit_code, Some(7));
    assert!(seen.windows(2).all(|w| w[0].time <= w[1].time));

    let info = rt.inspect(&id).await.unwrap().unwrap();
    assert_eq!(info.state, ContainerState::Exited);
    assert_eq!(info.exit_code, Some(7));
    let v = cli_inspect(&name).unwrap();
    assert_eq!(v["State"]["ExitCode"], 7);
    assert_eq!(v["State"]["Status"], "exited", "Docker must not restart it");
    assert_eq!(v["RestartCount"], 0);

    rt.remove(&id, false).await.unwrap();
    let e = next_event(&mut events).await;
    assert_eq!((e.id, e.action), (id, EventAction::Destroy));
}

#[tokio::test]
async fn a_missing_image_is_reported_by_name() {
    let rt = engine().await;
    let mut cleanup = Cleanup::new();
    // A registry on a closed local port: the pull fails at once, whatever
    // the machine's DNS or network.
    let missing = format!("127.0.0.1:1/flocker-test/{}:latest", unique("absent"));
    let name = cleanup.name(unique("flocker-rt-noimage"));
    let mut s = spec(&name, Labels::new(), "true");
    s.image = missing.clone();

    let e = rt.create(&s).await.unwrap_err();
    assert_eq!(
        e,
        RuntimeError::ImageNotPresent {
            image: missing.clone(),
            pull_error: None
        }
    );
    assert_eq!(
        e.to_string(),
        format!("image {missing} not present on this node")
    );
    assert!(!rt.image_present(&missing).await.unwrap());
    assert!(cli_inspect(&name).is_none(), "nothing was created");

    let e = rt.pull_image(&missing).await.unwrap_err();
    assert!(
        matches!(
            &e,
            RuntimeError::ImageNotPresent {
                pull_error: Some(_),
                ..
            }
        ),
        "{e:?}"
    );
    eprintln!("pull error as reported: {e}");
    let expected = format!("image {missing} not present on this node and no registry is reachable");
    assert!(e.to_string().starts_with(&expected), "{e}");
}

#[tokio::test]
async fn a_taken_port_is_reported_with_its_address() {
    let rt = engine().await;
    image(&rt).await;
    let mut cleanup = Cleanup::new();
    let port = free_port("127.0.0.3");
    let first = cleanup.name(unique("flocker-rt-port-a"));
    let second = cleanup.name(unique("flocker-rt-port-b"));
    let mut a = spec(&first, Labels::new(), "sleep 1000");
    a.ports.push(binding("127.0.0.3", port));
    let mut b = spec(&second, Labels::new(), "sleep 1000");
    b.ports.push(binding("127.0.0.3", port));
    rt.run(&a).await.unwrap();

    let id = rt.create(&b).await.unwrap();
    let e = rt.start(&id).await.unwrap_err();
    eprintln!("container conflict as reported: {e}");
    let address = format!("127.0.0.3:{port}");
    assert!(
        matches!(&e, RuntimeError::PortAllocated { address: Some(a), .. } if *a == address),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with(&format!("port {address} already allocated")),
        "{e}"
    );
    let v = cli_inspect(&second).unwrap();
    assert_eq!(
        v["State"]["Running"], false,
        "the second container did not start"
    );

    // A port held by a process outside Docker: the engine's proxy cannot bind.
    let outside = TcpListener::bind(("127.0.0.4", 0)).unwrap();
    let outside_port = outside.local_addr().unwrap().port();
    let third = cleanup.name(unique("flocker-rt-port-c"));
    let mut c = spec(&third, Labels::new(), "sleep 1000");
    c.ports.push(binding("127.0.0.4", outside_port));
    let e = rt.run(&c).await.unwrap_err();
    eprintln!("outside-process conflict as reported: {e}");
    let address = format!("127.0.0.4:{outside_port}");
    assert!(
        matches!(&e, RuntimeError::PortAllocated { address: Some(a), .. } if *a == address),
        "{e:?}"
    );
    assert!(
        cli_inspect(&third).is_none(),
        "run removes what it could not start"
    );
    drop(outside);
}

#[tokio::test]
async fn stop_and_remove_and_their_errors() {
    let rt = engine().await;
    image(&rt).await;
    let mut cleanup = Cleanup::new();
    let name = cleanup.name(unique("flocker-rt-stop"));
    let id = rt
        .run(&spec(&name, Labels::new(), "sleep 1000"))
        .await
        .unwrap();

    let e = rt
        .create(&spec(&name, Labels::new(), "true"))
        .await
        .unwrap_err();
    assert!(matches!(e, RuntimeError::NameInUse { .. }), "{e:?}");

    let e = rt.remove(&id, false).await.unwrap_err();
    assert!(
        matches!(e, RuntimeError::Engine { status: 409, .. }),
        "{e:?}"
    );

    // sh as PID 1 ignores SIGTERM: the grace runs out and Docker kills it.
    let t = Instant::now();
    rt.stop(&id, Duration::from_secs(1)).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(15));
    let info = rt.inspect(&id).await.unwrap().unwrap();
    assert_eq!(info.state, ContainerState::Exited);
    assert_eq!(info.exit_code, Some(137));
    // Already stopped: a no-op.
    rt.stop(&id, Duration::from_secs(1)).await.unwrap();

    rt.remove(&id, false).await.unwrap();
    assert_eq!(rt.inspect(&id).await.unwrap(), None);
    assert!(cli_inspect(&name).is_none());
    let gone = Err(RuntimeError::ContainerNotFound(id.to_string()));
    assert_eq!(rt.remove(&id, true).await, gone);
    assert_eq!(rt.stop(&id, Duration::from_secs(1)).await, gone);
    assert_eq!(rt.start(&id).await, gone);

    // Force-removing a running container kills it.
    let forced = cleanup.name(unique("flocker-rt-force"));
    let id = rt
        .run(&spec(&forced, Labels::new(), "sleep 1000"))
        .await
        .unwrap();
    rt.remove(&id, true).await.unwrap();
    assert!(cli_inspect(&forced).is_none());
}

/// A stand-in engine on a unix socket that answers version negotiation,
/// sends one event, then drops the connection: what a dying dockerd looks
/// like to a subscriber, without stopping the engine other tests share.
#[tokio::test]
async fn the_event_stream_ends_with_an_error_when_the_engine_goes_away() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<String>(8);
    let server = tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let request = String::from_utf8_lossy(&request).to_string();
            let _ = seen_tx
                .send(request.lines().next().unwrap_or("").to_string())
                .await;
            if request.contains("/version") {
                let body = r#"{"ApiVersion":"1.41","Version":"20.10.24"}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            } else if request.contains("/events") {
                let event = r#"{"Type":"container","Action":"start","Actor":{"ID":"abc","Attributes":{"name":"web","flocker.node":"n1"}},"time":1,"timeNano":1000000001}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{event}\n\r\n",
                    event.len() + 1
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                // The engine dies mid-stream: no terminating chunk.
                drop(conn);
            }
        }
    });
    let rt = DockerRuntime::new(socket.to_str().unwrap(), DockerTimeouts::default()).unwrap();
    let mut events = rt.events(&labels(&[("flocker.node", "n1")])).await.unwrap();
    let within = Duration::from_secs(10);
    let first = tokio::time::timeout(within, events.next()).await.unwrap();
    let first = first.expect("one event").expect("the event arrives");
    assert_eq!(first.id, ContainerId::from("abc"));
    assert_eq!(first.action, EventAction::Start);
    assert_eq!(first.labels, labels(&[("flocker.node", "n1")]));
    let last = tokio::time::timeout(within, events.next()).await.unwrap();
    let err = last.expect("an error item before the end").unwrap_err();
    assert!(err.is_engine_down(), "{err:?}");
    assert!(err.to_string().contains(socket.to_str().unwrap()), "{err}");
    let end = tokio::time::timeout(within, events.next()).await.unwrap();
    assert!(end.is_none(), "the error is the last item");

    let version = seen_rx.recv().await.unwrap();
    assert!(version.contains("/version"), "{version}");
    let subscribe = seen_rx.recv().await.unwrap();
    assert!(
        subscribe.contains("/v1.41/events"),
        "the negotiated version is used: {subscribe}"
    );
    server.abort();
}

#[tokio::test]
async fn an_absent_engine_is_unreachable_with_its_address() {
    let endpoint = "unix:///nonexistent/flocker-test/docker.sock";
    let rt = DockerRuntime::new(endpoint, DockerTimeouts::default()).unwrap();
    let e = rt.ping().await.unwrap_err();
    assert!(e.is_engine_down());
    assert!(
        e.to_string()
            .starts_with(&format!("Docker engine unreachable at {endpoint}: ")),
        "{e}"
    );
    let e = rt.list(&Labels::new()).await.unwrap_err();
    assert!(e.is_engine_down(), "{e}");
}

/// What a volume point relies on: a paused container holds still (its
/// counter file stops growing), thaws and goes on, and one stopped or
/// removed while paused dies where it stands — it never runs again to add
/// a line (a frozen app thawed after its node lost its lease would write
/// beside its successor).
#[tokio::test]
async fn a_paused_container_holds_still_and_is_killed_before_it_could_run_again() {
    let rt = engine().await;
    image(&rt).await;
    let mut cleanup = Cleanup::new();
    let data = tempfile::tempdir().unwrap();
    let counter = data.path().join("counter");
    let lines = || {
        std::fs::read_to_string(&counter)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let mut s = spec(
        &cleanup.name(unique("flocker-rt-freeze")),
        Labels::new(),
        "i=0; while true; do i=$((i+1)); echo $i >> /data/counter; usleep 10000; done",
    );
    s.binds.push(Bind {
        host_path: data.path().to_str().unwrap().into(),
        container_path: "/data".into(),
        read_only: false,
    });
    let id = rt.run(&s).await.unwrap();
    wait_for("the counter to grow", Duration::from_secs(20), || {
        (lines() > 5).then_some(())
    })
    .await;

    for round in 0..3 {
        rt.pause(&id).await.unwrap();
        let info = rt.inspect(&id).await.unwrap().unwrap();
        assert_eq!(info.state, ContainerState::Paused, "round {round}");
        let held = lines();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            lines(),
            held,
            "round {round}: the paused app went on writing"
        );
        rt.unpause(&id).await.unwrap();
        assert_eq!(
            rt.inspect(&id).await.unwrap().unwrap().state,
            ContainerState::Running
        );
        wait_for(
            "the thawed counter to grow",
            Duration::from_secs(10),
            || (lines() > held).then_some(()),
        )
        .await;
    }

    // Stopped while paused: it is gone within the stop, having written nothing more.
    rt.pause(&id).await.unwrap();
    let held = lines();
    let t = Instant::now();
    rt.stop(&id, Duration::from_secs(10)).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "a frozen app was given its grace: {:?}",
        t.elapsed()
    );
    assert_eq!(
        rt.inspect(&id).await.unwrap().unwrap().state,
        ContainerState::Exited
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lines(), held, "the stopped app ran again after its pause");

    // Removed while paused, the same.
    rt.start(&id).await.unwrap();
    wait_for(
        "the restarted counter to grow",
        Duration::from_secs(20),
        || (lines() > held + 5).then_some(()),
    )
    .await;
    rt.pause(&id).await.unwrap();
    let held = lines();
    rt.remove(&id, true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lines(), held, "the removed app ran again after its pause");
    assert_eq!(rt.inspect(&id).await.unwrap(), None);
}
