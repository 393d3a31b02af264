//! The network lab (`src/netlab/`) on the real machine: two hosts with their
//! own engines, a container publishing on one host's address, reached from
//! the client's and the other host's namespaces across the bridge; then
//! nothing of the lab may remain. Needs root, iproute2, iptables, nsenter
//! and dockerd: without them the test fails, saying which are missing.

use flocker::netlab::{Lab, CLAIM_DIR, CLIENT, DATA_DIR};
use flocker::runtime::{ContainerRuntime, ContainerSpec, PortBinding, Protocol, TEST_IMAGE};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// GETs `url` from inside `ns` with curl; httpd may need a moment
/// after its container starts, so a few tries.
fn fetch(lab: &Lab, ns: &str, url: &str) -> String {
    let mut last = String::new();
    for _ in 0..40 {
        let out = lab
            .command(ns, "curl")
            .unwrap()
            .args(["-sS", "--max-time", "3", url])
            .output()
            .expect("run curl through nsenter");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{url} from {ns}: {last}");
}

fn entries_with_prefix(dir: &str, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|es| {
            es.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn iptables(args: &[&str]) -> String {
    let out = Command::new("iptables").args(args).output().unwrap();
    assert!(out.status.success(), "iptables {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `pid` is still a lab engine, or a zombie child of this test (an
/// engine the lab did not reap).
fn engine_runs(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let ppid: u32 = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    ppid == std::process::id() || String::from_utf8_lossy(&cmdline).contains(DATA_DIR)
}

/// Processes whose command line or root directory is under `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for pid in entries_with_prefix("/proc", "")
        .into_iter()
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
    {
        let proc_dir = PathBuf::from("/proc").join(&pid);
        let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let rooted = std::fs::read_link(proc_dir.join("root")).is_ok_and(|r| r.starts_with(dir));
        if rooted || cmdline.contains(dir.to_str().unwrap()) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_port_answers_across_the_lab_and_teardown_leaves_nothing() {
    let lab = tokio::task::spawn_blocking(|| Lab::start(&["a", "b"]))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("starting the network lab: {e:#}"));
    let slot = lab.slot();
    let prefix = format!("fl-{slot}-");
    let data = PathBuf::from(DATA_DIR).join(slot.to_string());
    assert_eq!(lab.data_dir(), data);
    let a = lab.host("a").unwrap().clone();
    let b = lab.host("b").unwrap().clone();
    assert_eq!(lab.host_names(), ["a", "b"]);
    assert_eq!(lab.engine("a").unwrap(), a.engine);
    assert_ne!(a.ip, b.ip);
    assert!(lab.host("c").is_err());
    let dockerds: Vec<u32> = [&a, &b]
        .iter()
        .map(|h| h.dockerd_pid().expect("a running dockerd in its pid file"))
        .collect();
    assert_eq!(
        entries_with_prefix("/run/netns", &prefix).len(),
        3,
        "two hosts and the client"
    );

    lab.load_busybox_image(TEST_IMAGE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let runtime = a.runtime().unwrap();
    let spec = ContainerSpec {
        name: "web".into(),
        image: TEST_IMAGE.into(),
        command: Some(
            [
                "sh",
                "-c",
                "mkdir -p /www && echo hello from a > /www/index.html && exec httpd -f -p 80 -h /www",
            ]
            .map(String::from)
            .to_vec(),
        ),
        ports: vec![PortBinding {
            host_ip: a.ip.into(),
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
        }],
        ..Default::default()
    };
    let id = runtime.create(&spec).await.unwrap();
    runtime.start(&id).await.unwrap();
    // b's engine got the image too, and runs nothing.
    let b_runtime = b.runtime().unwrap();
    assert!(b_runtime.image_id(TEST_IMAGE).await.unwrap().is_some());
    assert!(b_runtime
        .list(&Default::default())
        .await
        .unwrap()
        .is_empty());

    // The engine published inside a's namespace, not in the root one.
    let dnat = String::from_utf8(
        lab.command("a", "iptables")
            .unwrap()
            .args(["-t", "nat", "-S", "DOCKER"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        dnat.contains(&format!("-d {}/32", a.ip)) && dnat.contains("--dport 8080"),
        "no DNAT rule for {}:8080 in a's namespace:\n{dnat}",
        a.ip
    );
    assert!(!iptables(&["-t", "nat", "-S"]).contains(&a.ip.to_string()));

    let url = format!("http://{}:8080/", a.ip);
    assert_eq!(fetch(&lab, CLIENT, &url), "hello from a");
    assert_eq!(fetch(&lab, "b", &url), "hello from a");
    assert_eq!(fetch(&lab, &b.netns, &url), "hello from a");

    // A thread that entered the client's namespace holds its address and
    // reaches a's port with plain sockets; this thread stays outside.
    let (client_ip, a_ip) = (lab.client_ip(), a.ip);
    let inside = lab
        .thread_in(CLIENT, "test-client", move || {
            use std::io::{Read, Write};
            let bound = std::net::TcpListener::bind((client_ip, 0))?.local_addr()?;
            let mut stream = std::net::TcpStream::connect((a_ip, 8080))?;
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply)?;
            Ok((bound.ip(), reply))
        })
        .unwrap()
        .join()
        .expect("the client thread");
    let (bound, reply) = inside.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(bound, std::net::IpAddr::from(client_ip));
    assert!(reply.ends_with("hello from a\n"), "{reply:?}");
    assert!(std::net::TcpListener::bind((client_ip, 0)).is_err());
    assert!(lab.thread_in("nosuch", "x", || Ok(())).is_err());
    let prefix_words = lab.command_prefix(CLIENT).unwrap();
    assert_eq!(
        prefix_words[1],
        format!("--net=/run/netns/fl-{slot}-client")
    );

    tokio::task::spawn_blocking(move || drop(lab))
        .await
        .unwrap();

    assert_eq!(
        entries_with_prefix("/run/netns", &prefix),
        Vec::<String>::new()
    );
    assert_eq!(
        entries_with_prefix("/sys/class/net", &prefix),
        Vec::<String>::new()
    );
    let rules = iptables(&["-S", "DOCKER-USER"]);
    assert!(!rules.contains(&format!("fl-{slot}-br")), "{rules}");
    for pid in dockerds {
        assert!(
            !engine_runs(pid),
            "dockerd {pid} still there (or an unreaped zombie)"
        );
    }
    assert_eq!(processes_under(&data), Vec::<String>::new());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(data.to_str().unwrap()),
        "mounts left under {}",
        data.display()
    );
    assert!(!data.exists(), "{} left", data.display());
    assert!(!Path::new(CLAIM_DIR).join(format!("{slot}.pid")).exists());
}
