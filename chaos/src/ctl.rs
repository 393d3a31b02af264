//! `flocker ctl` as the clients and the harness use it: one bounded child
//! process per call, spawned from a thread that has entered the clients'
//! network namespace, and its exit code mapped to what the history needs.

use crate::sh;
use anyhow::Result;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A ctl call that has not finished by then is killed; its outcome is
/// unknown (ctl's own write timeout is shorter, so this is a backstop).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// How a ctl call ended, in the history's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0: done.
    Ok(String),
    /// Exit 1 (refused, nothing changed) or 2 (usage: nothing sent).
    Fail(String),
    /// Exit 3, a timeout, a signal: may or may not have happened.
    Unknown(String),
}

#[derive(Debug, Clone)]
pub struct Ctl {
    pub bin: PathBuf,
    pub certs: PathBuf,
}

impl Ctl {
    /// Runs `flocker ctl --node ADDR ARGS…` from the calling thread's
    /// namespace.
    pub fn call(&self, addr: &str, args: &[&str]) -> Outcome {
        match self.raw(addr, args) {
            Ok(out) => match out.code {
                Some(0) => Outcome::Ok(out.stdout),
                Some(1) | Some(2) => Outcome::Fail(out.why()),
                _ => Outcome::Unknown(out.why()),
            },
            // We could not even start it: nothing was sent.
            Err(e) => Outcome::Fail(format!("{e:#}")),
        }
    }

    pub fn raw(&self, addr: &str, args: &[&str]) -> Result<sh::Output> {
        sh::run(
            Command::new(&self.bin)
                .arg("ctl")
                .args(["--node", addr])
                .arg("--certs")
                .arg(&self.certs)
                .args(args)
                .env("FLOCKER_LOG", "error"),
            CALL_TIMEOUT,
        )
    }
}
