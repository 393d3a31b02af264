//! Running host tools (`ip`, `iptables`, `tc`, `docker`, `flocker ctl`) as
//! child processes with a deadline: every call is bounded, a child that
//! overruns is killed, and the outcome says which of the three happened
//! (exited with a code, killed by a signal, or timed out).

use anyhow::{Context, Result};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Output kept from each stream of a child (the rest is dropped).
const MAX_OUTPUT: usize = 1 << 20;

/// How a bounded child process ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The exit code; `None` when a signal ended it or it timed out.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// The first line of stderr (or stdout), for error messages.
    pub fn why(&self) -> String {
        if self.timed_out {
            return "timed out".into();
        }
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let line: String = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("request id:"))
            .collect::<Vec<_>>()
            .join(" | ");
        let mut line = line.chars().take(300).collect::<String>();
        if line.is_empty() {
            line = format!("exit {:?}", self.code);
        }
        line
    }
}

/// Runs `cmd` with stdin closed, waiting at most `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    // Drain both pipes on their own threads so a chatty child never blocks.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || read_bounded(&mut out));
    let err_t = std::thread::spawn(move || read_bounded(&mut err));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    Ok(Output {
        code: if timed_out { None } else { status.code() },
        timed_out,
        stdout,
        stderr,
    })
}

fn read_bounded(r: &mut impl Read) -> String {
    let mut buf = Vec::new();
    let _ = r.take(MAX_OUTPUT as u64).read_to_end(&mut buf);
    // Keep reading (and discarding) so the child never blocks on a full pipe.
    let _ = std::io::copy(r, &mut std::io::sink());
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs a setup command that must succeed; the error names the command.
pub fn must(args: &[&str]) -> Result<String> {
    let (program, rest) = args.split_first().context("empty command")?;
    let out = run(Command::new(program).args(rest), Duration::from_secs(30))?;
    if !out.ok() {
        anyhow::bail!("`{}` failed: {}", args.join(" "), out.why());
    }
    Ok(out.stdout)
}

/// Runs a command whose failure is expected at times (teardown of things
/// that may be gone already); reports whether it succeeded.
pub fn quiet(args: &[&str]) -> bool {
    let Some((program, rest)) = args.split_first() else {
        return false;
    };
    run(Command::new(program).args(rest), Duration::from_secs(30)).is_ok_and(|o| o.ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_run_reports_code_and_timeout() {
        let out = run(
            Command::new("sh").args(["-c", "echo hi; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout.trim(), "hi");
        let out = run(Command::new("sleep").arg("5"), Duration::from_millis(100)).unwrap();
        assert!(out.timed_out);
        assert_eq!(out.code, None);
    }
}
