//! The clients: a few threads, each inside the clients' network namespace,
//! each issuing one operation at a time through `flocker ctl` to a random
//! node — register writes (a whole-configuration `ctl deploy --if-version`
//! with one app's `CHAOS_VALUE` changed), linearizable reads (`ctl config
//! show`) and volume moves (`ctl move`). Every operation gets a unique
//! request id and is recorded as invoke, then ok / fail / info.
//!
//! Choices (operation, key, node, value) come from a generator seeded by the
//! run's seed and the client's number. A nemesis may steer where reads and
//! writes go ([`Targets`]), which the planted-bug schedules need.

use crate::app::{Apps, LEDGER, VALUE_VAR};
use crate::clock::RunClock;
use crate::ctl::{Ctl, Outcome};
use crate::history::{EventType, OpKind};
use crate::record::{History, Jsonl, Op};
use crate::views;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Retries of a write whose outcome is unknown, with the same request id.
const WRITE_RETRIES: u32 = 2;
/// Pause between a client's operations (uniform in this range, ms).
const THINK_MS: (u64, u64) = (20, 200);

/// Process numbers outside the clients'.
/// Moves the nemesis asks for: 100..200.
pub const NEMESIS_PROCESS: u32 = 100;
/// The initial deployment: register i's first value is written by process
/// `SETUP_PROCESS + i` (one operation at a time per process).
pub const SETUP_PROCESS: u32 = 300;
pub const FINAL_PROCESS: u32 = 200;

/// Where a nemesis wants reads and writes to go, if anywhere.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Send reads here (most of the time).
    pub reads_via: Option<String>,
    /// Send writes anywhere but here.
    pub writes_avoid: Option<String>,
}

/// What every client shares.
pub struct Env {
    pub ctl: Ctl,
    /// (name, address) of each node.
    pub nodes: Vec<(String, String)>,
    pub apps: Apps,
    pub history: Arc<History>,
    pub moves: Arc<Jsonl>,
    pub client_ns: String,
    pub work: PathBuf,
    pub stop: Arc<AtomicBool>,
    pub targets: Mutex<Targets>,
    pub clock: RunClock,
    /// False once `ctl move` turned out not to exist in this build.
    pub moves_supported: AtomicBool,
    /// Request ids issued so far (unique within the run).
    pub issued: AtomicU64,
    /// `DIR/data`: the nodes' data dirs, where watchers compare volumes.
    pub data_root: PathBuf,
    pub seed: u64,
    /// Early evidence of a violation (planted runs stop on it).
    pub caught: Arc<crate::caught::Caught>,
}

impl Env {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctl: Ctl,
        nodes: Vec<(String, String)>,
        apps: Apps,
        history: Arc<History>,
        moves: Arc<Jsonl>,
        client_ns: String,
        work: PathBuf,
        clock: RunClock,
        seed: u64,
        caught: Arc<crate::caught::Caught>,
    ) -> Env {
        let data_root = work.with_file_name("data");
        Env {
            ctl,
            nodes,
            apps,
            history,
            moves,
            client_ns,
            work,
            stop: Arc::new(AtomicBool::new(false)),
            targets: Mutex::new(Targets::default()),
            clock,
            moves_supported: AtomicBool::new(true),
            issued: AtomicU64::new(0),
            data_root,
            seed,
            caught,
        }
    }

    pub fn addr(&self, node: &str) -> String {
        self.nodes
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, a)| a.clone())
            .unwrap_or_default()
    }

    fn targets(&self) -> Targets {
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_targets(&self, t: Targets) {
        *self.targets.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    fn request_id(&self, rng: &mut impl Rng, process: u32) -> String {
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        crate::ids::request_id(rng, process, n)
    }
}

/// Starts `clients` client threads.
pub fn start(env: Arc<Env>, clients: u32) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .filter_map(|p| {
            let env = env.clone();
            std::thread::Builder::new()
                .name(format!("client-{p}"))
                .spawn(move || {
                    if let Err(e) = crate::topology::enter_netns(&env.client_ns) {
                        eprintln!("flocker-chaos: client {p}: {e:#}");
                        return;
                    }
                    client_loop(&env, p);
                })
                .ok()
        })
        .collect()
}

fn client_loop(env: &Arc<Env>, process: u32) {
    let mut rng = ChaCha8Rng::seed_from_u64(
        env.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(u64::from(process) + 1)),
    );
    while !env.stop.load(Ordering::SeqCst) {
        let targets = env.targets();
        let roll = rng.random_range(0..100u32);
        let key = env.apps.registers[rng.random_range(0..env.apps.registers.len())].clone();
        let random_node = env.nodes[rng.random_range(0..env.nodes.len())].0.clone();
        if roll < 50 {
            let node = match &targets.reads_via {
                Some(n) if rng.random_range(0..10) < 8 => n.clone(),
                _ => random_node,
            };
            read(env, &mut rng, process, &key, &node);
        } else if roll < 92 || !env.moves_supported.load(Ordering::SeqCst) {
            let others: Vec<&String> = env
                .nodes
                .iter()
                .map(|(n, _)| n)
                .filter(|n| Some(*n) != targets.writes_avoid.as_ref())
                .collect();
            let node = others[rng.random_range(0..others.len())].clone();
            let value = format!("{process}-{}", env.issued.load(Ordering::SeqCst));
            write(env, &mut rng, process, &key, &value, &node);
        } else {
            let to = env.nodes[rng.random_range(0..env.nodes.len())].0.clone();
            move_app(env, &mut rng, process, LEDGER, &to, &random_node);
        }
        let think = rng.random_range(THINK_MS.0..=THINK_MS.1);
        std::thread::sleep(Duration::from_millis(think));
    }
}

/// A linearizable read of `key`'s register through `node`.
pub fn read(env: &Env, rng: &mut impl Rng, process: u32, key: &str, node: &str) {
    let op = Op {
        process,
        f: OpKind::Read,
        key: key.to_string(),
        value: None,
        node: node.to_string(),
        request_id: env.request_id(rng, process),
    };
    let invoke_ns = env.history.record(&op, EventType::Invoke, None, None);
    match env
        .ctl
        .call(&env.addr(node), &["config", "show", "-o", "json"])
    {
        Outcome::Ok(out) => match views::config_values(&out, VALUE_VAR) {
            Some((_, values)) => {
                let value = values.get(key).cloned().flatten();
                let ok_ns = env.history.record(&op, EventType::Ok, value.clone(), None);
                env.caught.read_ok(key, value.as_deref(), invoke_ns, ok_ns);
            }
            None => {
                env.history
                    .record(&op, EventType::Info, None, Some("unreadable answer".into()));
            }
        },
        Outcome::Fail(why) => {
            env.history.record(&op, EventType::Fail, None, Some(why));
        }
        Outcome::Unknown(why) => {
            env.history.record(&op, EventType::Info, None, Some(why));
        }
    }
}

/// Sets `key`'s register to `value`: reads the configuration through
/// `node`, then deploys it with only that value changed, refused unless the
/// version is still the one read.
pub fn write(env: &Env, rng: &mut impl Rng, process: u32, key: &str, value: &str, node: &str) {
    let op = Op {
        process,
        f: OpKind::Write,
        key: key.to_string(),
        value: Some(value.to_string()),
        node: node.to_string(),
        request_id: env.request_id(rng, process),
    };
    let v = op.value.clone();
    let invoke_ns = env.history.record(&op, EventType::Invoke, v.clone(), None);
    let addr = env.addr(node);
    // Nothing is sent until the deploy, so a failed read fails the write.
    let (version, current) = match env.ctl.call(&addr, &["config", "show", "-o", "json"]) {
        Outcome::Ok(out) => match views::config_values(&out, VALUE_VAR) {
            Some(x) => x,
            None => {
                env.history.record(
                    &op,
                    EventType::Fail,
                    v,
                    Some("unreadable configuration".into()),
                );
                return;
            }
        },
        Outcome::Fail(why) | Outcome::Unknown(why) => {
            env.history.record(
                &op,
                EventType::Fail,
                v,
                Some(format!("reading the configuration: {why}")),
            );
            return;
        }
    };
    let mut values: BTreeMap<String, String> = current
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    values.insert(key.to_string(), value.to_string());
    let (deployment, application) = env.apps.files(&values);
    let dir = env.work.join(format!("client-{process}"));
    let files = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("deployment.yml"), deployment))
        .and_then(|()| std::fs::write(dir.join("application.yml"), application));
    if let Err(e) = files {
        env.history.record(
            &op,
            EventType::Fail,
            v,
            Some(format!("writing the files: {e}")),
        );
        return;
    }
    let d = dir.join("deployment.yml").display().to_string();
    let a = dir.join("application.yml").display().to_string();
    let version = version.to_string();
    let args = [
        "deploy",
        &d,
        &a,
        "--if-version",
        &version,
        "--request-id",
        &op.request_id,
    ];
    let (kind, error) = call_with_retries(env, &addr, &args);
    let done_ns = env.history.record(&op, kind, v, error);
    if kind == EventType::Ok {
        env.caught.write_ok(key, value, invoke_ns, done_ns);
    }
}

/// Sends a write, retrying an unknown outcome with the same request id. A
/// refusal after an unknown attempt stays unknown: the first attempt may
/// still be applied later.
fn call_with_retries(env: &Env, addr: &str, args: &[&str]) -> (EventType, Option<String>) {
    let mut unknown = None;
    for attempt in 0..=WRITE_RETRIES {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        match env.ctl.call(addr, args) {
            Outcome::Ok(_) => return (EventType::Ok, None),
            Outcome::Fail(why) => {
                return match unknown {
                    Some(first) => (EventType::Info, Some(format!("{first}; then: {why}"))),
                    None => (EventType::Fail, Some(why)),
                };
            }
            Outcome::Unknown(why) => {
                unknown.get_or_insert(why);
                if env.stop.load(Ordering::SeqCst) {
                    break;
                }
            }
        }
    }
    (EventType::Info, unknown)
}

/// `ctl move APP TO` through `via` (the move observer in moves.rs records
/// the moves that happen in `moves.jsonl`).
pub fn move_app(env: &Arc<Env>, rng: &mut impl Rng, process: u32, app: &str, to: &str, via: &str) {
    if !env.moves_supported.load(Ordering::SeqCst) {
        return;
    }
    let op = Op {
        process,
        f: OpKind::Move,
        key: app.to_string(),
        value: Some(to.to_string()),
        node: via.to_string(),
        request_id: env.request_id(rng, process),
    };
    let v = op.value.clone();
    let addr = env.addr(via);
    env.history.record(&op, EventType::Invoke, v.clone(), None);
    let args = ["move", app, to, "--request-id", &op.request_id];
    let (kind, error) = call_with_retries(env, &addr, &args);
    if kind == EventType::Fail
        && error.as_deref().is_some_and(|e| {
            e.contains("unrecognized subcommand") || e.contains("unexpected argument")
        })
    {
        // This build has no `ctl move` (yet): say so once, then stop trying.
        if env.moves_supported.swap(false, Ordering::SeqCst) {
            eprintln!(
                "flocker-chaos: `flocker ctl move` is not available: no volume moves this run"
            );
        }
    }
    env.history.record(&op, kind, v, error);
}
