//! The HTTPS JSON API (`node --http-listen`) on a real 3-node cluster, with
//! `curl` as the client: certificates from `ca init --san 127.0.0.1`, so
//! curl verifies each node by its address; a client without a certificate
//! is refused in the handshake; reads, deploys with `If-Match` and
//! `Idempotency-Key`, the error statuses (400 with file/line, 403, 404,
//! 409, 503), moves, drain/activate, labels, history pages and the
//! OpenAPI document.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

const APPS: &str = "version: 1\napplications:\n  web:\n    image: flocker-test/busybox\n  db:\n    image: flocker-test/busybox\n";

/// A user's bundle: (ca.crt, cert, key).
struct Who {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Who {
    fn of(bundle: &Path, user: &str) -> Who {
        Who {
            ca: bundle.join("ca.crt"),
            cert: bundle.join(format!("users/{user}.crt")),
            key: bundle.join(format!("users/{user}.key")),
        }
    }
}

impl Who {
    /// `curl` presenting this certificate, printing only the status code
    /// (`000` when no HTTP answer came).
    fn curl_status(&self, args: &[&str], url: &str) -> (bool, String) {
        let out = self
            .curl()
            .args(["-o", "/dev/null", "-w", "%{http_code}"])
            .args(args)
            .arg(url)
            .output()
            .expect("run curl");
        let status = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success(), status)
    }

    fn curl(&self) -> Command {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "40"])
            .arg("--cacert")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key);
        cmd
    }
}

struct Reply {
    status: u16,
    body: Value,
    headers: String,
}

/// `curl` with the user's certificate; `body`, when given, is sent as JSON.
fn curl(who: &Who, method: &str, url: &str, headers: &[&str], body: Option<&Value>) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("headers");
    let mut cmd = who.curl();
    cmd.args(["-X", method])
        .arg("-D")
        .arg(&head)
        .args(["-w", "\n%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(body.to_string());
    }
    let out = cmd
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "curl {method} {url}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (text, code) = stdout.rsplit_once('\n').expect("status line");
    Reply {
        status: code.trim().parse().expect("status code"),
        body: serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}")),
        headers: std::fs::read_to_string(head).unwrap_or_default(),
    }
}

fn deploy_body(deployment: &str) -> Value {
    json!({"deployment": deployment, "application": APPS})
}

#[test]
fn the_https_api_serves_ctl_requests_with_the_same_certificates_and_roles() {
    let names = ["n1", "n2", "n3"];
    let (mut c, http) = Cluster::start_https(&names, T);
    let admin = Who::of(&c.admin_certs(), "admin");
    let url = |i: usize, path: &str| format!("https://{}{path}", http[i]);

    // No client certificate: the handshake is refused, no HTTP answer.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(&admin.ca)
        .arg(url(0, "/v1/nodes"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "served without a client certificate");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000");

    // Reads from a follower or the leader alike.
    let nodes = curl(&admin, "GET", &url(1, "/v1/nodes"), &[], None);
    assert_eq!(nodes.status, 200, "{}", nodes.body);
    let listed: Vec<&str> = nodes.body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, names);
    let config = curl(&admin, "GET", &url(2, "/v1/configuration"), &[], None);
    assert_eq!(config.status, 200, "{}", config.body);
    assert_eq!(config.body["version"], 0);
    assert!(
        config.headers.to_lowercase().contains("etag: \"0\""),
        "{}",
        config.headers
    );

    deploys_with_if_match_and_idempotency(&admin, &url);
    refusals_have_honest_statuses(&c, &admin, &url);
    moves_drains_and_labels(&admin, &url);
    history_pages(&admin, &url);
    openapi_lists_the_routes(&admin, &url);

    // Without a quorum, a read is refused with 503: nothing was served.
    let leader = c.wait_for_leader(T);
    let survivor = names.iter().position(|n| *n != leader).unwrap();
    for name in names.iter().filter(|n| **n != names[survivor]) {
        c.kill(name);
    }
    let lost = curl(&admin, "GET", &url(survivor, "/v1/status"), &[], None);
    assert_eq!(lost.status, 503, "{}", lost.body);
    assert_eq!(lost.body["code"], "no_quorum");
    let write = curl(
        &admin,
        "POST",
        &url(survivor, "/v1/nodes/n1/drain"),
        &["Idempotency-Key: lost-1"],
        None,
    );
    assert!(matches!(write.status, 503 | 504), "{}", write.body);
    if write.status == 504 {
        assert_eq!(write.body["outcome"], "unknown", "{}", write.body);
    }
}

fn deploys_with_if_match_and_idempotency(admin: &Who, url: &dyn Fn(usize, &str) -> String) {
    let body = deploy_body("version: 1\nnodes:\n  n1: [web]\n  n2: [db]\n");
    let first = curl(
        admin,
        "PUT",
        &url(1, "/v1/configuration"),
        &["If-Match: \"0\"", "Idempotency-Key: deploy-1"],
        Some(&body),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["request_id"], "deploy-1");
    assert_eq!(first.body["replayed"], false);
    assert!(first.body["message"]
        .as_str()
        .unwrap()
        .contains("version 1"));
    // The same key again: applied once, the original outcome answered.
    let again = curl(
        admin,
        "PUT",
        &url(2, "/v1/configuration"),
        &["If-Match: 0", "Idempotency-Key: deploy-1"],
        Some(&body),
    );
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["replayed"], true);
    assert_eq!(again.body["index"], first.body["index"]);
    let config = curl(admin, "GET", &url(0, "/v1/configuration"), &[], None);
    assert_eq!(config.body["version"], 1, "{}", config.body);
    assert!(config.body["deployment"].as_str().unwrap().contains("n2"));
    // A stale version: 409, nothing applied.
    let other = deploy_body("version: 1\nnodes:\n  n1: [web, db]\n");
    let stale = curl(
        admin,
        "PUT",
        &url(0, "/v1/configuration"),
        &["If-Match: 0"],
        Some(&other),
    );
    assert_eq!(stale.status, 409, "{}", stale.body);
    assert_eq!(stale.body["code"], "version_conflict");
    let config = curl(admin, "GET", &url(0, "/v1/configuration"), &[], None);
    assert_eq!(config.body["version"], 1);
}

fn refusals_have_honest_statuses(c: &Cluster, admin: &Who, url: &dyn Fn(usize, &str) -> String) {
    // A bad file: 400 with the file, line and key, nothing sent on.
    let bad = json!({
        "deployment": "version: 1\nnodes:\n  n1: [web]\n",
        "application": "version: 1\napplications:\n  web:\n    imag: busybox\n",
    });
    let r = curl(admin, "PUT", &url(0, "/v1/configuration"), &[], Some(&bad));
    assert_eq!(r.status, 400, "{}", r.body);
    let problem = r.body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["message"].as_str().unwrap().contains("imag"))
        .unwrap_or_else(|| panic!("{}", r.body))
        .clone();
    assert_eq!(problem["file"], "application");
    assert_eq!(problem["line"], 4);
    assert!(
        problem["key"].as_str().unwrap().contains("web"),
        "{problem}"
    );
    let r = curl(
        admin,
        "PUT",
        &url(0, "/v1/configuration"),
        &[],
        Some(&json!({"x": 1})),
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // A viewer reads but may not write: 403, as ctl refuses it.
    let viewer = Who::of(&c.issue_user("watcher", "viewer"), "watcher");
    let r = curl(&viewer, "GET", &url(1, "/v1/status"), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    browser_bundle_works(c, &url(1, "/v1/status"));
    let body = deploy_body("version: 1\nnodes:\n  n1: [web, db]\n");
    let r = curl(
        &viewer,
        "PUT",
        &url(1, "/v1/configuration"),
        &[],
        Some(&body),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body["code"], "forbidden");
    let r = curl(&viewer, "POST", &url(2, "/v1/nodes/n3/drain"), &[], None);
    assert_eq!(r.status, 403, "{}", r.body);
    node_certificates_gain_nothing(c, url);
    too_large_bodies_are_refused(c, admin, url);

    // Unknown things: 404.
    let r = curl(
        admin,
        "POST",
        &url(0, "/v1/apps/nope/move"),
        &[],
        Some(&json!({"node": "n3"})),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = curl(admin, "GET", &url(0, "/v2/nodes"), &[], None);
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.body["code"], "not_found");

    // A revoked certificate is refused at the handshake, as by ctl.
    let cert = c.certs().join("users/watcher.crt");
    let r = c.ctl("n1", &["revoke", "--cert", cert.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let refused = wait_until(T, || {
        let (_, status) = viewer.curl_status(&[], &url(2, "/v1/status"));
        (status == "000").then_some(())
    });
    assert!(refused.is_some(), "a revoked certificate is still served");
}

fn moves_drains_and_labels(admin: &Who, url: &dyn Fn(usize, &str) -> String) {
    let r = curl(
        admin,
        "POST",
        &url(2, "/v1/apps/web/move"),
        &[],
        Some(&json!({"node": "n3"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let status = curl(admin, "GET", &url(0, "/v1/status"), &[], None);
    let web = status.body["status"]["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "web")
        .unwrap()
        .clone();
    assert_eq!(web["desired_node"], "n3", "{web}");

    let node = |r: &Reply, name: &str| {
        r.body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap()
            .clone()
    };
    let r = curl(admin, "POST", &url(0, "/v1/nodes/n2/drain"), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    let nodes = curl(admin, "GET", &url(1, "/v1/nodes"), &[], None);
    assert_eq!(node(&nodes, "n2")["drained"], true);
    let r = curl(admin, "POST", &url(1, "/v1/nodes/n2/activate"), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    let nodes = curl(admin, "GET", &url(2, "/v1/nodes"), &[], None);
    assert_eq!(node(&nodes, "n2")["drained"], false);

    let labels = json!({"labels": {"disk": "ssd", "zone": "a"}});
    let r = curl(
        admin,
        "PUT",
        &url(0, "/v1/nodes/n3/labels"),
        &[],
        Some(&labels),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let remove = json!({"labels": {"zone": null}});
    let r = curl(
        admin,
        "PUT",
        &url(0, "/v1/nodes/n3/labels"),
        &[],
        Some(&remove),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let nodes = curl(admin, "GET", &url(0, "/v1/nodes"), &[], None);
    assert_eq!(node(&nodes, "n3")["labels"], json!({"disk": "ssd"}));
    let bad = json!({"labels": {"no spaces": "x"}});
    let r = curl(
        admin,
        "PUT",
        &url(0, "/v1/nodes/n3/labels"),
        &[],
        Some(&bad),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = curl(
        admin,
        "PUT",
        &url(0, "/v1/nodes/n9/labels"),
        &[],
        Some(&labels),
    );
    assert_eq!(r.status, 404, "{}", r.body);
}

fn history_pages(admin: &Who, url: &dyn Fn(usize, &str) -> String) {
    let page = curl(admin, "GET", &url(1, "/v1/history?limit=2"), &[], None);
    assert_eq!(page.status, 200, "{}", page.body);
    let entries = page.body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{}", page.body);
    let before = page.body["next_before"].as_u64().unwrap();
    assert_eq!(Some(before), entries[0]["index"].as_u64());
    let older = curl(
        admin,
        "GET",
        &url(2, &format!("/v1/history?limit=2&before={before}")),
        &[],
        None,
    );
    let older = older.body["entries"].as_array().unwrap().clone();
    assert!(!older.is_empty());
    assert!(older.iter().all(|e| e["index"].as_u64().unwrap() < before));
    let all = curl(admin, "GET", &url(0, "/v1/history"), &[], None);
    let summaries: Vec<&str> = all.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(summaries.iter().filter(|id| **id == "deploy-1").count(), 1);
    let r = curl(admin, "GET", &url(0, "/v1/history?limit=many"), &[], None);
    assert_eq!(r.status, 400, "{}", r.body);
}

fn openapi_lists_the_routes(admin: &Who, url: &dyn Fn(usize, &str) -> String) {
    let doc = curl(admin, "GET", &url(0, "/v1/openapi.json"), &[], None);
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.body["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/nodes", "get"),
        ("/v1/status", "get"),
        ("/v1/configuration", "get"),
        ("/v1/configuration", "put"),
        ("/v1/apps/{app}/move", "post"),
        ("/v1/nodes/{node}/drain", "post"),
        ("/v1/nodes/{node}/activate", "post"),
        ("/v1/nodes/{node}/labels", "put"),
        ("/v1/history", "get"),
        ("/v1/events", "get"),
    ] {
        assert!(paths[path].get(method).is_some(), "{method} {path} missing");
    }
    assert!(doc.body["components"]["schemas"]["ErrorBody"].is_object());
}

/// `ca bundle --p12`: the PKCS#12 file a browser imports, here given to
/// curl, with the password printed once.
fn browser_bundle_works(c: &Cluster, url: &str) {
    let out_dir = c.dir.path().join("browser");
    let (p12, password) = c.p12_bundle("watcher", &out_dir);
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(out_dir.join("ca.crt"))
        .args(["--cert-type", "P12", "--cert"])
        .arg(format!("{}:{password}", p12.display()))
        .arg(url)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong password opens nothing.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cert-type", "P12", "--cert"])
        .arg(format!("{}:wrong", p12.display()))
        .arg("--cacert")
        .arg(out_dir.join("ca.crt"))
        .arg(url)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// A node's certificate is served as that node acting for itself, as on
/// the QUIC client service: it reads, sets its own labels (through its own
/// endpoint), and may not act as an operator (drain) or on another node.
fn node_certificates_gain_nothing(c: &Cluster, url: &dyn Fn(usize, &str) -> String) {
    let bundle = c.bundle("n1");
    let n1 = Who {
        ca: bundle.join("ca.crt"),
        cert: bundle.join("nodes/n1.crt"),
        key: bundle.join("nodes/n1.key"),
    };
    let r = curl(&n1, "GET", &url(1, "/v1/nodes"), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    let own = json!({"labels": {"rack": "r1"}});
    // Through its own endpoint (a node vouches only for itself when it
    // passes a request on).
    let r = curl(&n1, "PUT", &url(0, "/v1/nodes/n1/labels"), &[], Some(&own));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = curl(&n1, "PUT", &url(1, "/v1/nodes/n2/labels"), &[], Some(&own));
    assert_eq!(r.status, 403, "{}", r.body);
    let r = curl(&n1, "POST", &url(0, "/v1/nodes/n1/drain"), &[], None);
    assert_eq!(r.status, 403, "{}", r.body);
}

/// Bodies are bounded: past the limit, 413 before anything is parsed.
fn too_large_bodies_are_refused(c: &Cluster, admin: &Who, url: &dyn Fn(usize, &str) -> String) {
    let big = c.dir.path().join("big.json");
    let filler = "x".repeat(13 << 20);
    std::fs::write(
        &big,
        format!("{{\"deployment\": \"{filler}\", \"application\": \"\"}}"),
    )
    .unwrap();
    let data = format!("@{}", big.display());
    let (_, status) = admin.curl_status(
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &data,
        ],
        &url(0, "/v1/configuration"),
    );
    assert_eq!(status, "413");
}
