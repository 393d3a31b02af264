//! Security at the edge of a node: missing or foreign client certificates,
//! user certificates on Raft, one node's certificate acting as another, and
//! garbage or oversize frames. Each is refused with a clear error, and the
//! node keeps serving.

mod common;

use common::*;
use flocker::api::client::Client;
use flocker::api::{ClientEnvelope, ClientReply, ClientRequest};
use flocker::ca::{self, CertsDir, Role};
use flocker::net::frame::{read_frame, MAX_CLIENT_FRAME, MAX_RAFT_FRAME};
use flocker::net::tls::{load_cert, TlsMaterial};
use flocker::net::{CallError, Net, Service};
use flocker::raft::{node_id_for, RaftRpc};
use openraft::raft::VoteRequest;
use openraft::Vote;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use std::net::SocketAddr;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

fn still_serves(c: &Cluster, via: &str) {
    let nodes = c
        .nodes_json(via)
        .expect("node keeps serving after bad input");
    assert_eq!(nodes.len(), 3);
}

fn failure(reply: ClientReply) -> String {
    match reply {
        ClientReply::Failed {
            unknown: false,
            message,
        } => message,
        other => panic!("expected a refusal with nothing changed, got {other:?}"),
    }
}

#[test]
fn clients_without_a_valid_certificate_are_refused() {
    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &[]);
    c.wait_for_leader(T);
    let addr = c.addr("n1");
    let certs = CertsDir::new(c.certs());
    let ca = load_cert(&certs.ca_cert()).unwrap();
    let foreign_dir = c.dir.path().join("foreign");
    ca::init(
        &foreign_dir,
        &[],
        &[ca::Subject::user("admin")],
        ca::Validity::default(),
    )
    .unwrap();
    let foreign = CertsDir::new(&foreign_dir);

    rt().block_on(async {
        // No client certificate at all.
        let anonymous = TlsMaterial {
            ca: ca.clone(),
            own: None,
            deny: Default::default(),
        };
        let msg = failure(
            Client::with_tls(&anonymous, addr)
                .unwrap()
                .request(ClientRequest::Nodes { stale: true })
                .await,
        );
        assert!(msg.contains("refused our TLS credentials"), "{msg}");
        assert!(msg.contains("certificate required"), "{msg}");

        // A certificate from another CA, presented to a node it trusts.
        let foreign_admin = TlsMaterial {
            ca: ca.clone(),
            own: Some((
                vec![load_cert(&foreign.cert(Role::User, "admin")).unwrap()],
                PrivateKeyDer::from_pem_file(foreign.key(Role::User, "admin")).unwrap(),
            )),
            deny: Default::default(),
        };
        let msg = failure(
            Client::with_tls(&foreign_admin, addr)
                .unwrap()
                .request(ClientRequest::Nodes { stale: true })
                .await,
        );
        assert!(msg.contains("refused our TLS credentials"), "{msg}");
    });

    // And from the command line: a certs directory of another cluster.
    let r = ctl_at(addr, &foreign_dir, &["nodes"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("UnknownIssuer"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("not signed by the CA in your certs directory"),
        "{}",
        r.stderr
    );
    assert!(
        c.log("n1").contains("refused connection"),
        "the node logs the refusal"
    );
    still_serves(&c, "n1");
}

fn vote_as(name: &str) -> RaftRpc {
    RaftRpc::Vote(VoteRequest::new(Vote::new(1_000, node_id_for(name)), None))
}

async fn raft_call(net: &Net, addr: SocketAddr, rpc: &RaftRpc) -> CallError {
    match net
        .call::<_, serde_json::Value>(addr, None, Service::Raft, rpc, MAX_RAFT_FRAME, T)
        .await
    {
        Ok(_) => panic!("raft RPC should have been refused"),
        Err(e) => e,
    }
}

#[test]
fn raft_rpcs_need_the_senders_own_node_certificate() {
    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &[]);
    let leader = c.wait_for_leader(T);
    let term_before = c.nodes_json("n1").unwrap()[0]["term"].as_u64().unwrap();
    let addr = c.addr("n1");
    let certs = CertsDir::new(c.certs());
    rt().block_on(async {
        let user = Net::client(&TlsMaterial::load(&certs, Role::User, "admin").unwrap(), addr).unwrap();
        let err = raft_call(&user, addr, &vote_as("n2")).await;
        assert!(
            matches!(&err, CallError::Refused(m) if m.contains("need a node certificate") && m.contains("user 'admin'")),
            "{err}"
        );
        let n3 = Net::client(&TlsMaterial::load(&certs, Role::Node, "n3").unwrap(), addr).unwrap();
        let err = raft_call(&n3, addr, &vote_as("n2")).await;
        assert!(
            matches!(&err, CallError::Refused(m) if m.contains("on behalf of another node")),
            "{err}"
        );
        // Node-to-node requests are refused to users too.
        let err = user
            .call::<_, serde_json::Value>(
                addr,
                None,
                Service::Peer,
                &flocker::api::PeerRequest::Status,
                MAX_CLIENT_FRAME,
                T,
            )
            .await
            .unwrap_err();
        assert!(matches!(&err, CallError::Refused(m) if m.contains("node certificate")), "{err}");
    });
    // The forged high-term votes disturbed nothing.
    let nodes = c.nodes_json("n1").unwrap();
    assert_eq!(nodes[0]["term"].as_u64().unwrap(), term_before);
    assert!(nodes.iter().all(|n| n["leader"] == leader.as_str()));
}

/// Sends raw bytes after a service tag and returns the node's reply frame.
async fn raw(net: &Net, addr: SocketAddr, tag: u8, bytes: &[u8]) -> Result<ClientReply, String> {
    let (mut send, mut recv) = net.open(addr, None).await.unwrap();
    send.write_all(&[tag]).await.unwrap();
    send.write_all(bytes).await.unwrap();
    let _ = send.finish();
    read_frame::<_, Result<ClientReply, String>>(&mut recv, MAX_CLIENT_FRAME)
        .await
        .expect("the node answers with a frame")
}

#[test]
fn garbage_and_oversize_frames_close_only_their_stream() {
    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &[]);
    c.wait_for_leader(T);
    let addr = c.addr("n2");
    let certs = CertsDir::new(c.certs());
    rt().block_on(async {
        let net = Net::client(
            &TlsMaterial::load(&certs, Role::User, "admin").unwrap(),
            addr,
        )
        .unwrap();
        let client = Service::Client as u8;
        let oversize = raw(&net, addr, client, &u32::MAX.to_be_bytes())
            .await
            .unwrap_err();
        assert!(oversize.contains("exceeds the limit"), "{oversize}");
        let bad_version = raw(&net, addr, client, &[0, 0, 0, 3, 77, 1, 2])
            .await
            .unwrap_err();
        assert!(bad_version.contains("version 77"), "{bad_version}");
        let undecodable = raw(&net, addr, client, &[0, 0, 0, 4, 1, 0xff, 0xff, 0xff])
            .await
            .unwrap_err();
        assert!(undecodable.contains("undecodable"), "{undecodable}");
        let truncated = raw(&net, addr, client, &[0, 0, 1, 0, 1]).await.unwrap_err();
        assert!(truncated.contains("before a whole frame"), "{truncated}");
        let unknown = raw(&net, addr, 99, &[]).await.unwrap_err();
        assert!(unknown.contains("unknown service tag"), "{unknown}");
        // The same connection still carries good requests.
        let good = net
            .call::<_, ClientReply>(
                addr,
                None,
                Service::Client,
                &ClientEnvelope::new(ClientRequest::Nodes { stale: false }),
                MAX_CLIENT_FRAME,
                T,
            )
            .await
            .unwrap();
        assert!(
            matches!(good, ClientReply::Nodes(ref v) if v.len() == 3),
            "{good:?}"
        );
    });
    assert!(c.is_running("n2"));
    still_serves(&c, "n2");
}

/// (VmRSS, VmData) of a process, in KiB.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmData:"))
}

/// Opens a stream for `tag`, announces a frame of `declared` bytes and
/// sends `sent` bytes of it, leaving the stream open.
async fn half_frame(
    net: &Net,
    addr: SocketAddr,
    tag: Service,
    declared: usize,
    sent: usize,
) -> (quinn::SendStream, quinn::RecvStream) {
    let stream = net.open(addr, None).await.expect("a stream");
    announce(stream, tag, declared, sent).await
}

async fn announce(
    (mut send, recv): (quinn::SendStream, quinn::RecvStream),
    tag: Service,
    declared: usize,
    sent: usize,
) -> (quinn::SendStream, quinn::RecvStream) {
    let mut bytes = vec![tag as u8];
    bytes.extend_from_slice(&(declared as u32).to_be_bytes());
    bytes.push(flocker::net::frame::FRAME_VERSION);
    bytes.resize(bytes.len() + sent.saturating_sub(1), 0xa5);
    // A refused stream may be stopped before all of it is written.
    let _ = send.write_all(&bytes).await;
    (send, recv)
}

async fn refusal(recv: &mut quinn::RecvStream) -> String {
    read_frame::<_, Result<(), String>>(recv, MAX_CLIENT_FRAME)
        .await
        .expect("the node answers with a frame")
        .expect_err("a refusal")
}

#[test]
fn a_users_stream_flood_costs_the_node_little() {
    use flocker::net::endpoint::{
        MAX_CONNECTIONS_PER_USER, REQUEST_TIMEOUT, USER_STREAMS_PER_CONNECTION,
    };
    use futures::future::join_all;
    use futures::FutureExt;

    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &[]);
    c.wait_for_leader(T);
    // The flood comes from its own user, so the admin's `ctl` stays usable.
    let out = std::process::Command::new(BIN)
        .args(["ca", "issue", "--dir"])
        .arg(c.certs())
        .args(["--user", "flood"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = c.addr("n1");
    let pid = c.nodes[c.index("n1")].child.as_ref().unwrap().id();
    still_serves(&c, "n1");
    let before = memory_of(pid);

    let certs = CertsDir::new(c.certs());
    let tls = TlsMaterial::load(&certs, Role::User, "flood").unwrap();
    let rt = rt();
    // Endpoints bind inside a runtime.
    let _inside = rt.enter();
    let per_conn = USER_STREAMS_PER_CONNECTION as usize;
    // All but a few connections hold client streams that announce almost
    // 4 MiB and send 1 KiB; the rest try Raft and peer streams announcing
    // 32 MiB, which are refused before their frame is read.
    let refusing = 6;
    let nets: Vec<std::sync::Arc<Net>> = (0..MAX_CONNECTIONS_PER_USER)
        .map(|_| Net::client(&tls, addr).unwrap())
        .collect();
    let nodes = || ClientEnvelope::new(ClientRequest::Nodes { stale: true });
    let (flood, refused) = rt.block_on(async {
        // One ordinary call on each first, one connection at a time (their
        // handshakes do not race each other on a loaded machine): the node
        // has admitted every connection.
        for net in &nets[refusing..] {
            net.call::<_, ClientReply>(addr, None, Service::Client, &nodes(), MAX_CLIENT_FRAME, T)
                .await
                .expect("a connection within the user's limit is served");
        }
        let flood = join_all(nets[refusing..].iter().map(|net| async move {
            // Then as many streams as the connection allows at once: the
            // first stream ended, so the node may have granted one more.
            let mut streams = Vec::new();
            while let Some(stream) = net.open(addr, None).now_or_never() {
                let stream = stream.expect("a stream");
                streams.push(announce(stream, Service::Client, MAX_CLIENT_FRAME - 1, 1024).await);
                assert!(
                    streams.len() <= per_conn,
                    "more than {per_conn} streams open at once on a user connection"
                );
            }
            assert!(
                streams.len() >= per_conn - 1,
                "only {} streams",
                streams.len()
            );
            streams
        }))
        .await;
        let refused = join_all(nets[..refusing].iter().map(|net| async move {
            let mut reasons = Vec::new();
            for i in 0..per_conn {
                let tag = if i % 2 == 0 {
                    Service::Raft
                } else {
                    Service::Peer
                };
                let (_send, mut recv) = half_frame(net, addr, tag, MAX_RAFT_FRAME, 1024).await;
                reasons.push((tag, refusal(&mut recv).await));
            }
            reasons
        }))
        .await;
        (flood, refused)
    });
    for (tag, reason) in refused.iter().flatten() {
        let expected = match tag {
            Service::Raft => "Raft streams need a node certificate",
            _ => "peer streams need a node certificate",
        };
        assert!(
            reason.contains(expected) && reason.contains("user 'flood'"),
            "{reason}"
        );
    }

    // One connection more than a user may hold is refused with the reason.
    // (On a loaded machine a flood connection may already have ended, so a
    // few more may be let in first: each new one is kept open.)
    let mut extras = Vec::new();
    let err = loop {
        let extra = Net::client(&tls, addr).unwrap();
        let call = rt.block_on(extra.call::<_, ClientReply>(
            addr,
            None,
            Service::Client,
            &nodes(),
            MAX_CLIENT_FRAME,
            T,
        ));
        match call {
            Err(err) => break err,
            Ok(_) if extras.len() < refusing => extras.push(extra),
            Ok(_) => panic!(
                "{} connections beyond the flood were served; the limit is {MAX_CONNECTIONS_PER_USER}",
                extras.len() + 1
            ),
        }
    };
    assert!(
        matches!(&err, CallError::Unreachable { reason, .. }
            if reason.contains("refused this connection")
                && reason.contains(&format!("{MAX_CONNECTIONS_PER_USER} connections"))),
        "{err}"
    );

    // During the flood the node serves an operator, and holds little.
    still_serves(&c, "n1");
    let during = memory_of(pid);
    let streams: usize = flood.iter().map(Vec::len).sum::<usize>() + refusing * per_conn;
    eprintln!(
        "flood of {streams} streams on {} connections, announcing {} MiB: node RSS {} -> {} KiB (+{} KiB), VmData {} -> {} KiB (+{} KiB)",
        MAX_CONNECTIONS_PER_USER,
        (flood.iter().map(Vec::len).sum::<usize>() * MAX_CLIENT_FRAME
            + refusing * per_conn * MAX_RAFT_FRAME)
            >> 20,
        before.0,
        during.0,
        during.0.saturating_sub(before.0),
        before.1,
        during.1,
        during.1.saturating_sub(before.1),
    );
    assert!(
        during.0 < before.0 + 64 * 1024,
        "RSS grew from {} to {} KiB",
        before.0,
        during.0
    );
    // Announced lengths are never reserved: no buffer of their size exists.
    assert!(
        during.1 < before.1 + 256 * 1024,
        "VmData grew from {} to {} KiB",
        before.1,
        during.1
    );

    // Every slow stream is timed out with the reason, and the connection
    // then carries a normal request.
    let reasons = rt.block_on(join_all(flood.into_iter().flatten().map(
        // The sending half stays open (dropping it would end the stream).
        |(send, mut recv)| async move {
            let reason = refusal(&mut recv).await;
            drop(send);
            reason
        },
    )));
    for reason in &reasons {
        assert!(
            reason.contains("stream timed out") && reason.contains("1024 of 4194303 bytes"),
            "{reason}"
        );
    }
    let reply = rt
        .block_on(nets[refusing].call::<_, ClientReply>(
            addr,
            None,
            Service::Client,
            &nodes(),
            MAX_CLIENT_FRAME,
            T + REQUEST_TIMEOUT,
        ))
        .unwrap();
    assert!(
        matches!(reply, ClientReply::Nodes(ref v) if v.len() == 3),
        "{reply:?}"
    );
    let after = memory_of(pid);
    eprintln!(
        "after the flood timed out: node RSS {} KiB, VmData {} KiB",
        after.0, after.1
    );
    let log = c.log("n1");
    assert!(
        log.contains("refused connection"),
        "the node logs the refusal"
    );
    assert!(
        log.contains("stream timed out"),
        "the node logs the timeouts"
    );
    assert!(c.is_running("n1"));
}
