//! Writers for the run's JSONL files. Each writer is shared by the threads
//! that produce its records; a line is stamped with the run clock and written
//! under the writer's lock, so the order of lines is the order of their
//! timestamps, and it is flushed at once so a crashed run still leaves a
//! readable prefix.

use crate::clock::RunClock;
use crate::history::{Event, EventType, OpKind};
use anyhow::{Context, Result};
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

/// One JSONL file of records of any serializable type.
pub struct Jsonl {
    file: Mutex<BufWriter<File>>,
    clock: RunClock,
}

impl Jsonl {
    pub fn create(path: &Path, clock: RunClock) -> Result<Jsonl> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Jsonl {
            file: Mutex::new(BufWriter::new(file)),
            clock,
        })
    }

    /// Stamps and writes one record built from the current time.
    pub fn write_with<T: Serialize>(&self, make: impl FnOnce(u64) -> T) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let record = make(self.clock.now_ns());
        write_line(&mut file, &record);
    }
}

impl Jsonl {
    /// Writes one record built from a time the caller computes from the
    /// run clock (e.g. an event's own timestamp).
    pub fn write_at<T: Serialize>(&self, make: impl FnOnce(&RunClock) -> T) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let record = make(&self.clock);
        write_line(&mut file, &record);
    }
}

fn write_line<T: Serialize>(file: &mut BufWriter<File>, record: &T) {
    // A record that cannot be written is lost, but the run goes on: the
    // checker reports what it can from the rest, and stderr says why.
    let line = match serde_json::to_string(record) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("flocker-chaos: cannot encode a record: {e}");
            return;
        }
    };
    if let Err(e) = writeln!(file, "{line}").and_then(|()| file.flush()) {
        eprintln!("flocker-chaos: cannot write a record: {e}");
    }
}

/// `history.jsonl`: assigns each event its index under the lock.
pub struct History {
    file: Mutex<(u64, BufWriter<File>)>,
    clock: RunClock,
}

/// What an operation is, repeated on its completion.
#[derive(Debug, Clone)]
pub struct Op {
    pub process: u32,
    pub f: OpKind,
    pub key: String,
    pub value: Option<String>,
    pub node: String,
    pub request_id: String,
}

impl History {
    pub fn create(path: &Path, clock: RunClock) -> Result<History> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(History {
            file: Mutex::new((0, BufWriter::new(file))),
            clock,
        })
    }

    /// Records an event of `op` and returns its time.
    pub fn record(
        &self,
        op: &Op,
        kind: EventType,
        value: Option<String>,
        error: Option<String>,
    ) -> u64 {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let (index, file) = &mut *guard;
        let time_ns = self.clock.now_ns();
        let event = Event {
            index: *index,
            time_ns,
            process: op.process,
            kind,
            f: op.f,
            key: op.key.clone(),
            value,
            node: op.node.clone(),
            request_id: op.request_id.clone(),
            error,
        };
        *index += 1;
        write_line(file, &event);
        time_ns
    }
}
