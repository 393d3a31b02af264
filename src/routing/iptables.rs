//! The kernel half of routing: a [`RouteTable`] as iptables rules in this
//! node's own chains, replaced atomically with `iptables-restore --noflush`.
//!
//! Three chains per node, named from a hash of (cluster, node) so that
//! several nodes sharing one network namespace (a cluster on loopback) never
//! touch each other's rules:
//! - nat `…-PRE`, jumped to from PREROUTING and OUTPUT for packets to this
//!   node's publish IP: what another member forwarded returns untouched (no
//!   loops), then one DNAT per forwarded port to the serving node's address;
//! - nat `…-POST`, from POSTROUTING: those forwarded connections leave with
//!   this node's address as source, so replies come back through it (the
//!   return path) — connections the engine delivers locally keep the
//!   client's address;
//! - filter `…-FWD`, from FORWARD: accepts connections DNATed from this
//!   node's address (Docker sets FORWARD's policy to DROP).
//!
//! Every jump carries the comment `flocker:<cluster>:<node>`; at each
//! install the jumps carrying it are made exactly the desired ones, and the
//! chains' contents are replaced whole, so a restart (after a crash too)
//! leaves nothing stale behind.

use super::table::RouteTable;
use crate::runtime::Protocol;
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long an iptables call may wait for the xtables lock (seconds).
const LOCK_WAIT_S: &str = "5";
/// How long one iptables call may take in all.
const CALL_LIMIT: Duration = Duration::from_secs(20);

/// This node's chain names and marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chains {
    pub pre: String,
    pub post: String,
    pub forward: String,
    /// The comment on every jump into the chains.
    pub marker: String,
}

impl Chains {
    pub fn for_node(cluster_id: &str, node: &str) -> Chains {
        let hash = blake3::hash(format!("{cluster_id}/{node}").as_bytes()).to_hex();
        let short = &hash[..8];
        let cluster = cluster_id.get(..8).unwrap_or(cluster_id);
        Chains {
            pre: format!("FLK-{short}-PRE"),
            post: format!("FLK-{short}-POST"),
            forward: format!("FLK-{short}-FWD"),
            marker: format!("flocker:{cluster}:{node}"),
        }
    }
}

/// One jump into our chains, as `iptables -S` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Jump {
    table: &'static str,
    from: &'static str,
    rule: String,
}

fn host_net(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

fn socket(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

fn jumps(chains: &Chains, me: IpAddr) -> Vec<Jump> {
    let mark = &chains.marker;
    let dest = host_net(me);
    vec![
        Jump {
            table: "nat",
            from: "PREROUTING",
            rule: format!(
                "-A PREROUTING -d {dest} -m comment --comment {mark} -j {}",
                chains.pre
            ),
        },
        Jump {
            table: "nat",
            from: "OUTPUT",
            rule: format!(
                "-A OUTPUT -d {dest} -m comment --comment {mark} -j {}",
                chains.pre
            ),
        },
        Jump {
            table: "nat",
            from: "POSTROUTING",
            rule: format!(
                "-A POSTROUTING -m comment --comment {mark} -j {}",
                chains.post
            ),
        },
        Jump {
            table: "filter",
            from: "FORWARD",
            rule: format!(
                "-A FORWARD -m comment --comment {mark} -j {}",
                chains.forward
            ),
        },
    ]
}

/// The `iptables-restore --noflush` input that makes our chains hold
/// exactly `table`'s rules (a chain line empties the chain first).
pub fn render(table: &RouteTable, chains: &Chains, me: IpAddr) -> String {
    let mut nat = format!("*nat\n:{} - [0:0]\n:{} - [0:0]\n", chains.pre, chains.post);
    for peer in &table.peers {
        let _ = writeln!(nat, "-A {} -s {} -j RETURN", chains.pre, host_net(*peer));
    }
    for (route, node, ip) in table.forwards() {
        let proto = protocol_name(route.protocol);
        let port = route.port;
        let _ = writeln!(
            nat,
            "-A {} -p {proto} -m {proto} --dport {port} -m comment --comment {} -j DNAT --to-destination {}",
            chains.pre,
            comment_word(&format!("{}->{node}", route.app)),
            socket(ip, port),
        );
        let _ = writeln!(
            nat,
            "-A {} -d {} -p {proto} -m {proto} --dport {port} -m conntrack --ctstate DNAT --ctorigdst {} -j SNAT --to-source {}",
            chains.post,
            host_net(ip),
            host_net(me),
            me,
        );
    }
    nat.push_str("COMMIT\n");
    let mut filter = format!("*filter\n:{} - [0:0]\n", chains.forward);
    if table.forwards().next().is_some() {
        let _ = writeln!(
            filter,
            "-A {} -m conntrack --ctstate DNAT --ctorigdst {} -j ACCEPT",
            chains.forward,
            host_net(me)
        );
    }
    filter.push_str("COMMIT\n");
    nat + &filter
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// A comment iptables keeps as one word: app and node names are already
/// `[a-z0-9-]`, anything else becomes `_`; at most 250 bytes.
fn comment_word(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:>".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(250)
        .collect()
}

/// Runs iptables for one address family.
#[derive(Debug, Clone)]
pub struct Iptables {
    save: &'static str,
    restore: &'static str,
    tool: &'static str,
}

impl Iptables {
    pub fn for_address(ip: IpAddr) -> Iptables {
        if ip.is_ipv6() {
            Iptables {
                save: "ip6tables-save",
                restore: "ip6tables-restore",
                tool: "ip6tables",
            }
        } else {
            Iptables {
                save: "iptables-save",
                restore: "iptables-restore",
                tool: "iptables",
            }
        }
    }

    /// Fails with what to do when the tools are missing or not permitted.
    pub fn check(&self) -> Result<()> {
        self.call(self.tool, &["-w", LOCK_WAIT_S, "-t", "nat", "-S", "POSTROUTING"], None)
            .with_context(|| {
                format!(
                    "routing needs {} and the right to change this host's firewall (root or CAP_NET_ADMIN); install the `iptables` package or start the node with --routing off",
                    self.tool
                )
            })?;
        Ok(())
    }

    /// Makes the kernel route as `table` says.
    pub fn install(&self, table: &RouteTable, chains: &Chains, me: IpAddr) -> Result<()> {
        let script = render(table, chains, me);
        self.call(
            self.restore,
            &["-w", LOCK_WAIT_S, "--noflush"],
            Some(&script),
        )
        .context("replacing this node's routing rules")?;
        let wanted = jumps(chains, me);
        for table_name in ["nat", "filter"] {
            let ours: Vec<&Jump> = wanted.iter().filter(|j| j.table == table_name).collect();
            let mut parents: Vec<&str> = ours.iter().map(|j| j.from).collect();
            parents.dedup();
            for parent in parents {
                let mut present = self.marked(table_name, parent, chains)?;
                // Anything else carrying our marker goes (an old publish
                // IP's jump), and so does a second copy of a wanted one.
                let mut kept: Vec<String> = Vec::new();
                for line in &present {
                    if kept.contains(line) || !ours.iter().any(|j| j.rule == *line) {
                        self.delete(table_name, line)?;
                    } else {
                        kept.push(line.clone());
                    }
                }
                present = kept;
                for jump in ours.iter().filter(|j| j.from == parent) {
                    if !present.contains(&jump.rule) {
                        let spec = &jump.rule[format!("-A {parent} ").len()..];
                        let mut args = vec!["-w", LOCK_WAIT_S, "-t", table_name, "-I", parent, "1"];
                        args.extend(spec.split(' '));
                        self.call(self.tool, &args, None)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes our jumps and chains (a stopped node routes nothing).
    pub fn remove(&self, chains: &Chains) -> Result<()> {
        for (table_name, parents) in [
            ("nat", &["PREROUTING", "OUTPUT", "POSTROUTING"][..]),
            ("filter", &["FORWARD"][..]),
        ] {
            for parent in parents {
                for line in self.marked(table_name, parent, chains)? {
                    self.delete(table_name, &line)?;
                }
            }
        }
        for (table_name, chain) in [
            ("nat", &chains.pre),
            ("nat", &chains.post),
            ("filter", &chains.forward),
        ] {
            let exists = self
                .call(
                    self.tool,
                    &["-w", LOCK_WAIT_S, "-t", table_name, "-S", chain],
                    None,
                )
                .is_ok();
            if exists {
                self.call(
                    self.tool,
                    &["-w", LOCK_WAIT_S, "-t", table_name, "-F", chain],
                    None,
                )?;
                self.call(
                    self.tool,
                    &["-w", LOCK_WAIT_S, "-t", table_name, "-X", chain],
                    None,
                )?;
            }
        }
        Ok(())
    }

    /// Our chains and jumps as `iptables-save` prints them (for status and
    /// tests): every line naming one of our chains.
    pub fn listed(&self, chains: &Chains) -> Result<Vec<String>> {
        let all = self.call(self.save, &[], None)?;
        Ok(all
            .lines()
            .filter(|l| {
                l.contains(&chains.pre) || l.contains(&chains.post) || l.contains(&chains.forward)
            })
            .map(str::to_string)
            .collect())
    }

    /// The rules of `parent` that carry our marker, as `iptables -S` prints
    /// them without the quotes some builds put around comments (the marker
    /// has no spaces, so the words stay the same).
    fn marked(&self, table_name: &str, parent: &str, chains: &Chains) -> Result<Vec<String>> {
        let listed = self.call(
            self.tool,
            &["-w", LOCK_WAIT_S, "-t", table_name, "-S", parent],
            None,
        )?;
        let needle = format!("--comment {} ", chains.marker);
        Ok(listed
            .lines()
            .map(|l| l.replace('"', ""))
            .filter(|l| l.contains(&needle))
            .collect())
    }

    fn delete(&self, table_name: &str, line: &str) -> Result<()> {
        let Some(rest) = line.strip_prefix("-A ") else {
            bail!("unexpected rule line from {}: {line}", self.tool);
        };
        let mut args = vec!["-w", LOCK_WAIT_S, "-t", table_name, "-D"];
        args.extend(rest.split(' '));
        self.call(self.tool, &args, None).map(|_| ())
    }

    fn call(&self, program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {program}"))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(text.as_bytes())
                .with_context(|| format!("writing to {program}"))?;
        }
        let output =
            wait_bounded(child, CALL_LIMIT).with_context(|| format!("running {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// Waits for `child` at most `limit`, killing it after that.
fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Result<std::process::Output> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no answer within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::table::{Route, Target};

    fn table() -> RouteTable {
        let mut t = RouteTable::default();
        t.peers.insert("10.0.0.2".parse().unwrap());
        t.peers.insert("10.0.0.3".parse().unwrap());
        for (app, port, target) in [
            ("db", 5432, Target::Local),
            (
                "web",
                8080,
                Target::Forward {
                    node: "n2".into(),
                    ip: "10.0.0.2".parse().unwrap(),
                },
            ),
            ("gone", 9000, Target::Unrouted("not placed".into())),
        ] {
            t.routes.insert(
                (port, Protocol::Tcp),
                Route {
                    app: app.into(),
                    port,
                    protocol: Protocol::Tcp,
                    target,
                },
            );
        }
        t
    }

    #[test]
    fn only_forwarded_ports_get_rules_and_each_returns_through_this_node() {
        let chains = Chains::for_node("0123456789abcdef", "n1");
        let script = render(&table(), &chains, "10.0.0.1".parse().unwrap());
        let pre = &chains.pre;
        let post = &chains.post;
        let expected = format!(
            "*nat\n:{pre} - [0:0]\n:{post} - [0:0]\n\
             -A {pre} -s 10.0.0.2/32 -j RETURN\n\
             -A {pre} -s 10.0.0.3/32 -j RETURN\n\
             -A {pre} -p tcp -m tcp --dport 8080 -m comment --comment web->n2 -j DNAT --to-destination 10.0.0.2:8080\n\
             -A {post} -d 10.0.0.2/32 -p tcp -m tcp --dport 8080 -m conntrack --ctstate DNAT --ctorigdst 10.0.0.1/32 -j SNAT --to-source 10.0.0.1\n\
             COMMIT\n*filter\n:{fwd} - [0:0]\n\
             -A {fwd} -m conntrack --ctstate DNAT --ctorigdst 10.0.0.1/32 -j ACCEPT\nCOMMIT\n",
            fwd = chains.forward
        );
        assert_eq!(script, expected);
    }

    #[test]
    fn nothing_forwarded_leaves_empty_chains() {
        let chains = Chains::for_node("c", "n1");
        let mut t = table();
        t.routes
            .retain(|_, r| !matches!(r.target, Target::Forward { .. }));
        let script = render(&t, &chains, "10.0.0.1".parse().unwrap());
        assert!(!script.contains("DNAT --to"), "{script}");
        assert!(!script.contains("ACCEPT"), "{script}");
        assert!(script.contains(&format!(":{} - [0:0]", chains.forward)));
    }

    #[test]
    fn chain_names_fit_iptables_and_differ_per_node() {
        let a = Chains::for_node("cluster-one", "node-with-a-long-name-0123456789");
        let b = Chains::for_node("cluster-one", "n2");
        for name in [&a.pre, &a.post, &a.forward] {
            assert!(name.len() <= 28, "{name}");
        }
        assert_ne!(a.pre, b.pre);
        assert!(!a.marker.contains(' '));
    }

    #[test]
    fn jumps_match_what_iptables_prints() {
        let chains = Chains::for_node("c", "n1");
        let j = jumps(&chains, "10.0.0.1".parse().unwrap());
        assert_eq!(
            j[0].rule,
            format!(
                "-A PREROUTING -d 10.0.0.1/32 -m comment --comment flocker:c:n1 -j {}",
                chains.pre
            )
        );
    }

    #[test]
    fn a_udp_port_is_forwarded_as_udp() {
        let chains = Chains::for_node("c", "n1");
        let mut t = table();
        let mut web = t.routes[&(8080, Protocol::Tcp)].clone();
        web.protocol = Protocol::Udp;
        web.port = 5353;
        t.routes.insert((5353, Protocol::Udp), web);
        let script = render(&t, &chains, "10.0.0.1".parse().unwrap());
        assert!(script.contains("-p udp -m udp --dport 5353 -m comment --comment web->n2 -j DNAT --to-destination 10.0.0.2:5353"), "{script}");
        assert!(
            script.contains("-d 10.0.0.2/32 -p udp -m udp --dport 5353 -m conntrack"),
            "{script}"
        );
    }
}
