//! `ctl logs` on the real Docker engine: through a node that does not run
//! the app (so the page comes from its node's engine by a peer call),
//! `--tail`, and `-f`, which keeps printing new lines and follows the app to
//! its new node after `ctl move`. Needs a Docker engine: fails loudly
//! without one.

mod common;

use common::*;
use flocker::runtime::TEST_IMAGE;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// The app prints `tick N HOST` every 200 ms, N from 1 in each container,
/// HOST its container's hostname (the short container id).
const TALKER: &str = r#"version: 1
applications:
  talker:
    image: IMAGE
    command:
      - sh
      - -c
      - 'trap "exit 0" TERM; i=0; while true; do i=$((i+1)); echo "tick $i $(hostname)"; usleep 200000; done'
"#;

fn short_id(name: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{.Id}} {{.State.Running}}", name])
        .output()
        .expect("docker CLI");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (id, running) = text.trim().split_once(' ')?;
    (out.status.success() && running == "true").then(|| id[..12].to_string())
}

/// `tick N HOST` → (N, HOST).
fn tick(line: &str) -> Option<(u64, String)> {
    let mut words = line.split(' ');
    (words.next()? == "tick").then_some(())?;
    Some((words.next()?.parse().ok()?, words.next()?.to_string()))
}

/// Lines read as (tick, host).
type Ticks = [(u64, String)];

/// A `ctl logs -f` process, killed when dropped.
struct Follower(Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn logs_tail_and_follow_across_a_move() {
    build_image();
    let mut c = Cluster::start_each(&["n1", "n2", "n3"], &[], |name: &str| {
        let i: u8 = name.trim_start_matches('n').parse().unwrap();
        vec!["--publish-ip".into(), format!("127.0.0.{}", 150 + i)]
    });
    c.wait_for_leader(T);
    c.wait_for_registration(&["n1", "n2", "n3"], T);
    let dir = c.dir.path().to_path_buf();
    let apps = write(&dir, "app.yml", &TALKER.replace("IMAGE", TEST_IMAGE));
    let dep = write(&dir, "d.yml", "version: 1\nnodes:\n  n1: [talker]\n");
    let r = c.ctl(
        "n1",
        &["deploy", dep.to_str().unwrap(), apps.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "deploy: {}", r.stderr);
    let first_host =
        wait_until(T, || short_id(&c.container("n1", "talker"))).expect("talker runs on n1");

    // The whole log through n3, which does not run it: from tick 1 on.
    let all = wait_until(T, || {
        let r = c.ctl("n3", &["logs", "talker"]);
        assert_eq!(r.code, 0, "logs: {}", r.stderr);
        let ticks: Vec<(u64, String)> = r.stdout.lines().filter_map(tick).collect();
        (ticks.len() >= 5).then_some(ticks)
    })
    .expect("talker prints");
    for (i, (n, host)) in all.iter().enumerate() {
        assert_eq!((*n, host.as_str()), (i as u64 + 1, first_host.as_str()));
    }

    // --tail 2: the last two lines, no more.
    let r = c.ctl("n2", &["logs", "talker", "--tail", "2"]);
    assert_eq!(r.code, 0, "logs --tail: {}", r.stderr);
    let last: Vec<(u64, String)> = r.stdout.lines().filter_map(tick).collect();
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
    assert_eq!(last.len(), 2, "{}", r.stdout);
    assert_eq!(last[1].0, last[0].0 + 1, "consecutive: {last:?}");
    assert!(last[0].0 >= all.len() as u64 - 1, "the newest: {last:?}");

    // An unknown app is refused.
    let r = c.ctl("n2", &["logs", "nosuchapp"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stderr.contains("no application nosuchapp"),
        "{}",
        r.stderr
    );

    // -f: new lines as they come, through n3.
    let child = Command::new(BIN)
        .arg("ctl")
        .arg("--node")
        .arg(c.addr("n3").to_string())
        .arg("--certs")
        .arg(c.admin_certs())
        .args(["logs", "talker", "-f", "--tail", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run flocker ctl logs -f");
    let mut follower = Follower(child);
    let stdout = follower.0.stdout.take().expect("piped stdout");
    let (lines, seen) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut followed: Vec<(u64, String)> = Vec::new();
    let mut read_until = |done: &dyn Fn(&Ticks) -> bool| {
        let deadline = std::time::Instant::now() + T;
        while !done(&followed) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match seen.recv_timeout(left) {
                Ok(line) => followed.extend(tick(&line)),
                Err(_) => panic!("ctl logs -f stopped short; it printed {followed:?}"),
            }
        }
        followed.clone()
    };
    let before_move = read_until(&|f| f.len() >= 5);
    for pair in before_move.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0 + 1,
            "no line twice, none lost: {before_move:?}"
        );
    }
    assert!(before_move.iter().all(|(_, h)| *h == first_host));

    // The app moves to n2: -f goes on with the new container's lines,
    // from its first.
    let r = c.ctl("n1", &["move", "talker", "n2", "--wait", "--timeout", "60"]);
    assert_eq!(r.code, 0, "move: {}\n{}", r.stdout, r.stderr);
    let second_host =
        wait_until(T, || short_id(&c.container("n2", "talker"))).expect("talker runs on n2");
    let after_move = read_until(&|f| f.iter().filter(|(_, h)| *h == second_host).count() >= 3);
    let from_n2: Vec<&(u64, String)> = after_move
        .iter()
        .filter(|(_, h)| *h == second_host)
        .collect();
    assert_eq!(
        from_n2[0].0, 1,
        "the new container's lines from its first: {after_move:?}"
    );
    let switch = after_move
        .iter()
        .position(|(_, h)| *h == second_host)
        .unwrap();
    assert!(
        after_move[switch..].iter().all(|(_, h)| *h == second_host),
        "nothing from the old node after the new one: {after_move:?}"
    );
}
