//! The status page (`/` on a node with `--http-listen`) in a real headless
//! Chromium against a real 3-node cluster: the browser holds the user's
//! PKCS#12 from `ca bundle --p12` and trusts the CA (an NSS database under
//! a temporary HOME, as a user's browser would), and a managed policy
//! (AutoSelectCertificateForUrls) picks the certificate without a prompt.
//! Chromium is driven over `--remote-debugging-pipe` (the DevTools
//! protocol on fds 3 and 4) so the page keeps running while we look: the
//! DOM must show each app on its node after a deploy, and follow a volume
//! move live from the event stream (apps, the volume's owner, the handoff
//! event), without a reload. A screenshot goes to
//! `$FLOCKER_ARTIFACTS` (default: the target directory). Needs root (the
//! policy file) and Debian's `chromium` and `libnss3-tools`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(40);
const APPS: &str = "version: 1\napplications:\n  web:\n    image: flocker-test/busybox\n  \
    kv:\n    image: flocker-test/busybox\n    volume:\n      mountpoint: /data\n";

/// A managed Chromium policy file, removed when dropped.
struct Policy(PathBuf);

impl Policy {
    fn auto_select_certificate(origin: &str) -> Policy {
        let dir = Path::new("/etc/chromium/policies/managed");
        std::fs::create_dir_all(dir).expect("create the Chromium policy directory (needs root)");
        let path = dir.join(format!("flocker-test-{}.json", std::process::id()));
        let rule = json!({"pattern": origin, "filter": {}}).to_string();
        let policy = json!({"AutoSelectCertificateForUrls": [rule]});
        std::fs::write(&path, policy.to_string()).expect("write the Chromium policy");
        Policy(path)
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An NSS database under `home` with the CA trusted and the user's p12.
fn browser_home(home: &Path, ca: &Path, p12: &Path, password: &str) {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let sql = format!("sql:{}", db.display());
    run(Command::new("certutil").args(["-N", "-d", &sql, "--empty-password"]));
    run(Command::new("certutil")
        .args(["-A", "-d", &sql, "-n", "flocker-ca", "-t", "CT,,", "-i"])
        .arg(ca));
    run(Command::new("pk12util")
        .arg("-i")
        .arg(p12)
        .args(["-d", &sql, "-W", password]));
}

/// Headless Chromium on the DevTools pipe, attached to its one page.
struct Browser {
    child: Child,
    to: std::fs::File,
    from: std::fs::File,
    buffer: Vec<u8>,
    next_id: u64,
    session: String,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe(2) to fill.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: pipe(2) just returned these two fresh descriptors to us.
    unsafe {
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

impl Browser {
    fn open(home: &Path, url: &str) -> Browser {
        let (their_in, our_out) = pipe();
        let (our_in, their_out) = pipe();
        let (fd_in, fd_out) = (their_in.as_raw_fd(), their_out.as_raw_fd());
        let mut cmd = Command::new("chromium");
        cmd.args(["--headless", "--no-sandbox", "--disable-gpu"])
            .args(["--remote-debugging-pipe", "--window-size=1400,1000"])
            .arg(format!(
                "--user-data-dir={}",
                home.join("profile").display()
            ))
            .arg(url)
            .env("HOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(home.join("chromium.log")).unwrap());
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork
        // and exec, on descriptors that are open in the child.
        unsafe {
            cmd.pre_exec(move || {
                for (from, to) in [(fd_in, 3), (fd_out, 4)] {
                    if from == to {
                        libc::fcntl(to, libc::F_SETFD, 0);
                    } else if libc::dup2(from, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("run chromium (Debian package `chromium`)");
        drop((their_in, their_out));
        let mut browser = Browser {
            child,
            to: our_out.into(),
            from: our_in.into(),
            buffer: Vec::new(),
            next_id: 0,
            session: String::new(),
        };
        browser.attach(url);
        browser
    }

    fn attach(&mut self, url: &str) {
        let find = |targets: &Value| {
            targets["targetInfos"].as_array()?.iter().find_map(|t| {
                let page = t["type"] == "page" && t["url"].as_str()?.starts_with(url);
                page.then(|| t["targetId"].clone())
            })
        };
        let deadline = Instant::now() + T;
        let target = loop {
            let targets = self.call("Target.getTargets", json!({}));
            if let Some(id) = find(&targets) {
                break id;
            }
            assert!(Instant::now() < deadline, "no page for {url}: {targets}");
            std::thread::sleep(Duration::from_millis(200));
        };
        let attached = self.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        self.session = attached["sessionId"].as_str().unwrap().to_string();
    }

    /// One DevTools call; events in between are skipped.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let mut message = json!({"id": self.next_id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            while let Some(end) = self.buffer.iter().position(|b| *b == 0) {
                let frame: Vec<u8> = self.buffer.drain(..=end).collect();
                let reply: Value = serde_json::from_slice(&frame[..end]).expect("DevTools JSON");
                if reply["id"] == self.next_id {
                    assert!(reply["error"].is_null(), "{method}: {reply}");
                    return reply["result"].clone();
                }
            }
            let mut chunk = [0u8; 1 << 16];
            let n = self.from.read(&mut chunk).expect("read from chromium");
            assert!(n > 0, "chromium closed the DevTools pipe");
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    fn eval(&mut self, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true});
        self.call("Runtime.evaluate", params)["result"]["value"].clone()
    }

    fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(shot["data"].as_str().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = text.bytes().filter(|c| *c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// Where the page shows each app running: (app, data-node) of the
/// applications table, and (app, node) of the containers on node cards.
const WHERE: &str = r#"JSON.stringify({
  rows: [...document.querySelectorAll('#apps tr[data-app]')].map(r => [r.dataset.app, r.dataset.node || '']),
  cards: [...document.querySelectorAll('.node[data-node] li[data-app]')].map(l => [l.dataset.app, l.closest('.node').dataset.node, l.dataset.state]),
  events: [...document.querySelectorAll('#events li')].map(l => l.textContent),
  live: document.getElementById('live').textContent,
})"#;

fn wait_for_page(browser: &mut Browser, want: &[(&str, &str)], what: &str) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let seen: Value = browser
            .eval(WHERE)
            .as_str()
            .map(|s| serde_json::from_str(s).unwrap())
            .unwrap_or(Value::Null);
        let shows = |app: &str, node: &str| {
            let pair = json!([app, node]);
            let row = seen["rows"].as_array().is_some_and(|r| r.contains(&pair));
            let card = seen["cards"]
                .as_array()
                .is_some_and(|c| c.contains(&json!([app, node, "running"])));
            row && card
        };
        if want.iter().all(|(app, node)| shows(app, node)) {
            return seen;
        }
        assert!(Instant::now() < deadline, "{what}: the page shows {seen}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The owner the volumes table shows for kv.
fn volume_owner(browser: &mut Browser) -> String {
    let owner =
        browser.eval("document.querySelector('#volumes tr[data-app=kv]')?.dataset.node || ''");
    owner.as_str().unwrap_or("").to_string()
}

fn artifacts() -> PathBuf {
    match std::env::var_os("FLOCKER_ARTIFACTS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts"),
    }
}

#[test]
fn the_status_page_shows_where_apps_run_and_follows_a_volume_move_live() {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the status page test writes a Chromium policy under /etc: run it as root"
    );
    let (c, http) = Cluster::start_https(&["n1", "n2", "n3"], T);
    let dir = c.dir.path().to_path_buf();
    let bundle = dir.join("browser");
    let (p12, password) = c.p12_bundle("admin", &bundle);
    let home = dir.join("home");
    browser_home(&home, &bundle.join("ca.crt"), &p12, &password);

    let apps = write(&dir, "application.yml", APPS);
    let dep = write(
        &dir,
        "deployment.yml",
        "version: 1\nnodes:\n  n1: [web]\n  n2: [kv]\n",
    );
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let r = c.ctl(
        "n1",
        &["deploy", &s(&dep), &s(&apps), "--request-id", "page-1"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);

    // A follower's page.
    let origin = format!("https://{}", http[1]);
    let _policy = Policy::auto_select_certificate(&origin);
    let mut browser = Browser::open(&home, &format!("{origin}/"));
    wait_for_page(
        &mut browser,
        &[("web", "n1"), ("kv", "n2")],
        "after the deploy",
    );
    assert_eq!(volume_owner(&mut browser), "n2");

    // A volume move, followed live (no reload): the event stream makes the
    // page fetch again.
    let r = c.ctl("n3", &["move", "kv", "n3", "--request-id", "page-move"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let seen = wait_for_page(
        &mut browser,
        &[("web", "n1"), ("kv", "n3")],
        "after the move",
    );
    let owner = wait_until(T, || Some(volume_owner(&mut browser)).filter(|o| o == "n3"));
    assert_eq!(
        owner.as_deref(),
        Some("n3"),
        "the volumes table never showed n3 owning kv"
    );
    let events = seen["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.as_str().unwrap().contains("request page-move")),
        "{seen}"
    );
    assert_eq!(seen["live"], "live", "{seen}");
    let handed_off = wait_until(T, || {
        let events = browser.eval("document.getElementById('events').textContent");
        events
            .as_str()
            .filter(|e| e.contains("handed off n2→n3"))
            .map(|_| ())
    });
    assert!(
        handed_off.is_some(),
        "the handoff never showed in the events"
    );
    let nodes = browser.eval("[...document.querySelectorAll('.node[data-node]')].map(n => n.dataset.node + ' ' + n.dataset.role + ' ' + n.dataset.liveness).join(';')");
    let nodes = nodes.as_str().unwrap().to_string();
    assert!(
        nodes.contains("n1 ") && nodes.contains("n2 ") && nodes.contains("n3 "),
        "{nodes}"
    );
    assert!(nodes.contains("leader up"), "{nodes}");

    let shot = artifacts().join("status-page.png");
    browser.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        shot.display()
    );
    eprintln!("status page screenshot: {}", shot.display());
}
