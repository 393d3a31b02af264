//! Child processes a benchmark starts, killed when dropped.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};

pub struct Proc {
    pub child: Option<Child>,
    command: Vec<String>,
    log: std::path::PathBuf,
}

impl Proc {
    pub fn spawn(command: Vec<String>, log: std::path::PathBuf) -> anyhow::Result<Proc> {
        let mut p = Proc {
            child: None,
            command,
            log,
        };
        p.start()?;
        Ok(p)
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", self.command[0]))?;
        self.child = Some(child);
        Ok(())
    }

    /// kill -9 and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("ephemeral UDP port")
}

pub fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("ephemeral TCP port")
}
