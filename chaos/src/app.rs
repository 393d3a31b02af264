//! The applications the chaos run deploys, their image and their
//! configuration files.
//!
//! - `reg1..regN`: registers. Each is a sleeper whose `CHAOS_VALUE`
//!   environment variable is the register the workload writes and reads.
//! - `ledger`: the stateful `anywhere` app with a volume, replicated
//!   ([`LEDGER_REPLICAS`] copies, [`LEDGER_MAX_LAG_MS`]: a host crash fails
//!   it over to its replica). It appends hash-chained, fsynced records to
//!   `/data/ledger.log` and, after each fsync, sends a heartbeat to the
//!   witness. After a restart, move or failover it continues the chain
//!   from the file's last line.
//! - `beacon`: the same program without a volume (its chain lives in the
//!   container and restarts with it, so its heartbeats carry seq 0: no
//!   durable record). Apps with a volume stay on their node
//!   until the volume moves, so only a volume-less `anywhere` app is
//!   re-placed when its node is cut off: this is the app that shows two
//!   instances at once when fencing is broken.
//!
//! Both also answer on an external port ([`LEDGER_PORT`], [`BEACON_PORT`]):
//! busybox `httpd` serves `/state`, one line `<app> <instance> <container>
//! <node> <seq>` rewritten after every record, which the workload reads
//! through a random node's address (the routing mesh) and the routed-reads
//! checker judges.
//!
//! The image is `FROM scratch` with the host's static busybox (no registry
//! is reachable) and the script at `/chaos/ledger.sh`, built with Docker's
//! classic builder in every node's engine.

use crate::sh;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub const IMAGE: &str = "flocker-chaos/app:latest";
pub const LEDGER: &str = "ledger";
pub const BEACON: &str = "beacon";
/// Where the ledger keeps its log inside the container (its volume).
pub const LEDGER_MOUNT: &str = "/data";
pub const LEDGER_FILE: &str = "ledger.log";
/// Copies of the ledger's volume (the owner's included) and its
/// recovery-point objective, `max_lag`: half the default, so the
/// bounded-loss check has a tight bound to hold the failovers to (a point
/// every 1.7 s). At 3 s a campaign saw a failover lose 2.94 s: the link
/// nemesis (25% loss, a 279 kbit/s tbf) legitimately delays points, and a
/// bound that thin would make CI depend on when faults land.
pub const LEDGER_REPLICAS: u32 = 2;
pub const LEDGER_MAX_LAG_MS: u64 = 5000;
/// The environment variable holding a register's value.
pub const VALUE_VAR: &str = "CHAOS_VALUE";
/// The value every register starts with.
pub const INITIAL_VALUE: &str = "init";
/// The external ports the ledger and the beacon answer on (cluster-wide:
/// every node routes them), and the port inside their containers.
pub const LEDGER_PORT: u16 = 18100;
pub const BEACON_PORT: u16 = 18101;
const STATE_PORT: u16 = 8080;
/// The path their `httpd` serves the state line at.
pub const STATE_PATH: &str = "/state";

/// The stateful program. The node's name is the last component of its data
/// dir, which appears in /proc/self/mountinfo as the source of the fence
/// mount (`<data-dir>/fence` on `/.flocker`): flocker puts no node name in
/// the container's environment, and the name is the same for every node.
const LEDGER_SH: &str = r#"# flocker-chaos ledger: hash-chained, fsynced records plus heartbeats.
# Line: "<seq> <prev> <payload>\n"; prev = sha256 of the previous full line
# (with its newline), 64 zeros for seq 1.
log=${LOG:?LOG unset}
app=${APP:?APP unset}
mkdir -p "${log%/*}"
inst=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
src=$(sed -n 's#^[^ ]* [^ ]* [^ ]* \([^ ]*\)/fence /\.flocker .*#\1#p' /proc/self/mountinfo | head -n 1)
node=${src##*/}
seq=0
prev=0000000000000000000000000000000000000000000000000000000000000000
# DURABLE=0: the log is not on a volume, so heartbeats claim no record.
durable=${DURABLE:-1}
if [ -s "$log" ]; then
  # A torn last line (no newline: a crash mid-write) is not part of the chain.
  if [ -n "$(tail -c 1 "$log")" ]; then
    keep=$(( $(wc -c < "$log") - $(tail -n 1 "$log" | wc -c) ))
    truncate -s "$keep" "$log"
  fi
fi
# A new log's entry is durable only once its directory is synced (a power
# cut forgets a create whose directory was not).
if [ ! -e "$log" ]; then
  : > "$log" && sync "$log" && sync "${log%/*}" || { echo "ledger: cannot create $log" >&2; exit 1; }
fi
if [ -s "$log" ]; then
  last=$(tail -n 1 "$log")
  seq=${last%% *}
  prev=$(printf '%s\n' "$last" | sha256sum | cut -d ' ' -f 1)
fi
# The container's hostname is the start of its Docker id: the routed-reads
# checker finds the container in Docker's events by it.
container=$(hostname)
www=/tmp/www
mkdir -p "$www"
state() {
  printf '%s %s %s %s %s\n' "$app" "$inst" "$container" "$node" "$seq" > "$www/state.tmp"
  mv "$www/state.tmp" "$www/state"
}
state
httpd -f -p "${STATE_PORT:-8080}" -h "$www" &
echo "ledger $app instance $inst (container $container) on node '$node' continues after seq $seq"
while true; do
  seq=$((seq + 1))
  line="$seq $prev $inst"
  # Acknowledged (heartbeated) only once written and synced: after a
  # failed write or sync (EIO after a power cut) the app stops instead.
  if ! { printf '%s\n' "$line" >> "$log" && sync "$log"; }; then
    echo "ledger: record $seq not durable: stopping" >&2
    exit 1
  fi
  state
  prev=$(printf '%s\n' "$line" | sha256sum | cut -d ' ' -f 1)
  bseq=$seq; bhead=$prev
  if [ "$durable" = 0 ]; then bseq=0; bhead=0000000000000000000000000000000000000000000000000000000000000000; fi
  printf '{"app":"%s","node":"%s","instance":"%s","seq":%s,"head":"%s"}\n' \
    "$app" "$node" "$inst" "$bseq" "$bhead" |
    timeout 3 nc "$WITNESS_HOST" "$WITNESS_PORT" >/dev/null 2>&1
  sleep 0.2
done
"#;

const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
COPY ledger.sh /chaos/ledger.sh
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && /bin/busybox mkdir -p /tmp /data /usr/bin && /bin/busybox chmod 1777 /tmp"]
ENV PATH=/bin:/usr/bin
LABEL flocker.chaos-image=app
CMD ["sh"]
"#;

/// Builds [`IMAGE`] from the host's static busybox in every engine of
/// `hosts` ((node, `unix://…`) pairs), all at once.
pub fn build_images(work: &Path, hosts: &[(String, String)]) -> Result<()> {
    let ctx = work.join("image");
    std::fs::create_dir_all(&ctx)?;
    std::fs::copy("/bin/busybox", ctx.join("busybox"))
        .context("copying /bin/busybox (apt-get install busybox-static)")?;
    std::fs::write(ctx.join("ledger.sh"), LEDGER_SH)?;
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE)?;
    let builds: Vec<(String, std::thread::JoinHandle<Result<()>>)> = hosts
        .iter()
        .map(|(node, host)| {
            let (ctx, host, name) = (ctx.clone(), host.clone(), node.clone());
            let handle = std::thread::spawn(move || build_in(&ctx, &host, &name));
            (node.clone(), handle)
        })
        .collect();
    for (node, handle) in builds {
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("building {IMAGE} in {node}'s engine: panicked"))??;
    }
    Ok(())
}

fn build_in(ctx: &Path, host: &str, node: &str) -> Result<()> {
    let out = sh::run(
        Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args(["-H", host, "build", "-q", "-t", IMAGE])
            .arg(ctx),
        Duration::from_secs(180),
    )?;
    if !out.ok() {
        bail!("building {IMAGE} in {node}'s engine: {}", out.why());
    }
    Ok(())
}

/// The deployed applications and the values of their registers.
#[derive(Debug, Clone)]
pub struct Apps {
    /// The register apps (the workload's keys).
    pub registers: Vec<String>,
    /// Node the first register is pinned to (the rest are `anywhere`).
    pub pinned_node: String,
    pub witness_host: String,
    pub witness_port: u16,
}

impl Apps {
    pub fn new(registers: usize, pinned_node: &str, witness: std::net::SocketAddr) -> Apps {
        Apps {
            registers: (1..=registers).map(|i| format!("reg{i}")).collect(),
            pinned_node: pinned_node.to_string(),
            witness_host: witness.ip().to_string(),
            witness_port: witness.port(),
        }
    }

    /// Flocker's deployment.yml and application.yml, with `values` as the
    /// registers (a register missing from `values` gets [`INITIAL_VALUE`]).
    pub fn files(&self, values: &BTreeMap<String, String>) -> (String, String) {
        let mut anywhere: Vec<String> = self.registers.iter().skip(1).cloned().collect();
        anywhere.push(LEDGER.into());
        anywhere.push(BEACON.into());
        let mut deployment = String::from("version: 1\nnodes:\n");
        if let Some(first) = self.registers.first() {
            deployment.push_str(&format!("  {}: [{first}]\n", self.pinned_node));
        }
        deployment.push_str(&format!("anywhere: [{}]\n", anywhere.join(", ")));

        let mut apps = String::from("version: 1\napplications:\n");
        for reg in &self.registers {
            let value = values.get(reg).map_or(INITIAL_VALUE, String::as_str);
            apps.push_str(&format!(
                "  {reg}:\n    image: \"{IMAGE}\"\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n    environment:\n      {VALUE_VAR}: \"{value}\"\n    restart_policy:\n      name: always\n"
            ));
        }
        for (app, log, durable, port) in [
            (
                LEDGER,
                format!("{LEDGER_MOUNT}/{LEDGER_FILE}"),
                1,
                LEDGER_PORT,
            ),
            (BEACON, format!("/tmp/{LEDGER_FILE}"), 0, BEACON_PORT),
        ] {
            apps.push_str(&format!(
                "  {app}:\n    image: \"{IMAGE}\"\n    command: [\"sh\", \"/chaos/ledger.sh\"]\n    environment:\n      APP: \"{app}\"\n      LOG: \"{log}\"\n      DURABLE: \"{durable}\"\n      STATE_PORT: \"{STATE_PORT}\"\n      WITNESS_HOST: \"{}\"\n      WITNESS_PORT: \"{}\"\n    ports:\n      - internal: {STATE_PORT}\n        external: {port}\n    restart_policy:\n      name: always\n",
                self.witness_host, self.witness_port
            ));
            if app == LEDGER {
                apps.push_str(&format!(
                    "    volume:\n      mountpoint: {LEDGER_MOUNT}\n      replicas: {LEDGER_REPLICAS}\n      max_lag: {}ms\n",
                    LEDGER_MAX_LAG_MS
                ));
            }
        }
        (deployment, apps)
    }

    /// Every app name.
    pub fn all(&self) -> Vec<String> {
        let mut all = self.registers.clone();
        all.push(LEDGER.into());
        all.push(BEACON.into());
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_carry_every_app_and_value() {
        let apps = Apps::new(2, "n1", "10.213.1.1:4000".parse().unwrap());
        let values = BTreeMap::from([("reg2".to_string(), "7-3".to_string())]);
        let (d, a) = apps.files(&values);
        assert!(d.contains("n1: [reg1]"));
        assert!(d.contains("anywhere: [reg2, ledger, beacon]"));
        assert!(a.contains("CHAOS_VALUE: \"init\""));
        assert!(a.contains("CHAOS_VALUE: \"7-3\""));
        assert!(a.contains("mountpoint: /data"));
        assert!(a.contains("replicas: 2") && a.contains("max_lag: 5000ms"));
        assert!(a.contains("WITNESS_PORT: \"4000\""));
        assert!(a.contains("external: 18100") && a.contains("external: 18101"));
    }
}
