//! Moves between two stores in one process, every message through postcard
//! and its size limit, as the network will carry them. Trees are compared
//! with a walker of their own, not with the code under test.

use super::apply::{ApplyOptions, ReceiverCopy, RoundOutcome};
use super::delta::{Delta, DeltaStats};
use super::manifest::Manifest;
use super::mark::MarkState;
use super::scan::ScanOptions;
use super::store::{Scanner, VolumeStore};
use super::summary::{Limits, Summary, SummaryBuilder};
use super::sys;
use super::wire::*;
use super::VolumeError;
use super::{hash::BLOCK_SIZE, RelPath};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

const APP: &str = "db";

fn scan_opts() -> ScanOptions {
    // Files in tests are seconds old at most: with the real window every
    // one would be read again on every scan.
    ScanOptions {
        racy_window: Duration::ZERO,
        ..ScanOptions::default()
    }
}

struct Node {
    _dir: tempfile::TempDir,
    store: VolumeStore,
}

fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = VolumeStore::open(dir.path()).unwrap();
    Node { _dir: dir, store }
}

impl Node {
    fn data(&self) -> PathBuf {
        self.store.data_dir(APP).unwrap()
    }

    /// A receiver that writes every mode bit, so trees compare equal: these
    /// tests are about a faithful copy. The default (setuid and setgid not
    /// written) has tests of its own.
    fn receiver(&self, committed_epoch: u64) -> ReceiverCopy {
        let opts = ApplyOptions {
            preserve_setuid: true,
            ..ApplyOptions::default()
        };
        self.receiver_with(committed_epoch, opts)
    }

    fn receiver_with(&self, committed_epoch: u64, opts: ApplyOptions) -> ReceiverCopy {
        ReceiverCopy::open(&self.store, APP, committed_epoch, scan_opts(), opts).unwrap()
    }

    fn sender(&self) -> Sender {
        Sender {
            scanner: self.store.scanner(APP, scan_opts()).unwrap(),
            have: None,
        }
    }
}

/// The sender's state across rounds: what it knows the receiver holds.
struct Sender {
    scanner: Scanner,
    have: Option<Manifest>,
}

#[derive(Debug)]
struct Result {
    delta: DeltaStats,
    outcome: RoundOutcome,
    want_root: [u8; 32],
    /// Every byte of every message, as postcard encodes them.
    wire_bytes: u64,
    chunks: u64,
}

/// Encodes and decodes `msg` like the network will, checking its size.
fn wire<T: Serialize + DeserializeOwned>(msg: T, bytes: &mut u64) -> T {
    let encoded = postcard::to_allocvec(&msg).unwrap();
    assert!(
        encoded.len() <= MAX_MESSAGE_BYTES,
        "{} bytes",
        encoded.len()
    );
    *bytes += encoded.len() as u64;
    postcard::from_bytes(&encoded).unwrap()
}

fn round(s: &mut Sender, r: &mut ReceiverCopy, epoch: Option<u64>) -> Result {
    round_with(s, r, epoch, |_| {}, |c| c)
}

/// One round; `between` runs after the delta is computed and before the
/// chunks are read (the app writing meanwhile), `tamper` sees each chunk.
fn round_with(
    s: &mut Sender,
    r: &mut ReceiverCopy,
    epoch: Option<u64>,
    between: impl FnOnce(&Path),
    mut tamper: impl FnMut(Chunk) -> Chunk,
) -> Result {
    let mut wire_bytes = 0;
    let (want, _) = s.scanner.scan().unwrap();
    let have = match &s.have {
        Some(m) => Summary::from_manifest(m),
        None => {
            let mut b = SummaryBuilder::new(Limits::default());
            for item in r.summary_items().unwrap() {
                b.push(wire(item, &mut wire_bytes)).unwrap();
            }
            let mut summary = b.finish().unwrap();
            assert_eq!(summary.root(), r.manifest().root());
            for req in summary.leaf_requests(&want) {
                let req = wire(req, &mut wire_bytes);
                let reply = wire(r.leaves(&req).unwrap(), &mut wire_bytes);
                summary.add_leaves(&req, reply).unwrap();
            }
            summary
        }
    };
    let delta = Delta::compute(&have, &want).unwrap();
    between(s.scanner.data_dir());
    let mut round = r.begin_round().unwrap();
    for item in delta.items() {
        round.apply_item(wire(item, &mut wire_bytes)).unwrap();
    }
    let mut reader = delta.chunks(s.scanner.data_dir(), &want);
    let mut chunks = 0;
    for chunk in &mut reader {
        round
            .apply_chunk(wire(tamper(chunk.unwrap()), &mut wire_bytes))
            .unwrap();
        chunks += 1;
    }
    let (expected, end) = reader.finish().unwrap();
    let end = wire(end, &mut wire_bytes);
    let outcome = round.finish(&end, epoch).unwrap();
    s.have = Some(expected);
    Result {
        delta: delta.stats(),
        outcome,
        want_root: want.root(),
        wire_bytes,
        chunks,
    }
}

/// Every entry below `root` with everything a move preserves, read with
/// plain std calls.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let full = root.join(rel);
        let m = fs::symlink_metadata(&full).unwrap();
        let mtime = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
        let head = format!("{:o} {}:{} {mtime}", m.mode() & 0o7777, m.uid(), m.gid());
        let ft = m.file_type();
        let what = if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&full)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                walk(root, &rel.join(n), out);
            }
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("symlink -> {}", fs::read_link(&full).unwrap().display())
        } else {
            let bytes = fs::read(&full).unwrap();
            format!("file {} {}", bytes.len(), blake3::hash(&bytes).to_hex())
        };
        out.insert(rel.to_path_buf(), format!("{what} {head}"));
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

/// Deterministic bytes, different per seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, bytes).unwrap();
}

fn set_mtime(path: &Path, ns: i64) {
    sys::set_mtime_nofollow(path, ns).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Waits out a timestamp tick before rewriting a scanned file in place with
/// the same size: on kernels with coarse timestamps a rewrite in the tick of
/// the first write keeps the file's key. The racy window covers that in
/// production; these tests run without one.
fn settle() {
    std::thread::sleep(Duration::from_millis(20));
}

/// Overwrites block `i` of `path` in place.
fn poke_block(path: &Path, i: u64, seed: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&noise(seed, BLOCK_SIZE), i * BLOCK_SIZE as u64)
        .unwrap();
}

fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// A small tree with every kind of entry and metadata a move preserves.
fn populate(data: &Path) {
    write(&data.join("small.txt"), b"hello\n");
    write(&data.join("empty"), b"");
    write(&data.join("multi.bin"), &noise(1, 3 * BLOCK_SIZE + 100));
    write(&data.join("a/b/c/deep.txt"), b"deep");
    write(&data.join("a/b/other"), &noise(2, 70_000));
    fs::create_dir_all(data.join("emptydir")).unwrap();
    std::os::unix::fs::symlink("small.txt", data.join("link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", data.join("dangling")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", data.join("a/abs")).unwrap();
    // Sparse: 8 MiB with one data block in the middle.
    let f = File::create(data.join("sparse.img")).unwrap();
    f.set_len(8 << 20).unwrap();
    f.write_all_at(&noise(3, BLOCK_SIZE), 4 << 20).unwrap();
    drop(f);
    chmod(&data.join("small.txt"), 0o600);
    chmod(&data.join("multi.bin"), 0o4755);
    chmod(&data.join("a/b"), 0o750);
    if sys::is_superuser() {
        std::os::unix::fs::lchown(data.join("small.txt"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(data.join("a"), Some(42), Some(43)).unwrap();
        std::os::unix::fs::lchown(data.join("link"), Some(7), Some(8)).unwrap();
        // chown cleared the setuid bit: set it again.
        chmod(&data.join("multi.bin"), 0o4755);
    }
    // mtimes last, deepest first, with nanoseconds.
    let mut t = 1_600_000_000_123_456_789i64;
    for p in [
        "a/b/c/deep.txt",
        "a/b/c",
        "a/b/other",
        "a/abs",
        "a/b",
        "a",
        "small.txt",
        "empty",
        "multi.bin",
        "emptydir",
        "link",
        "dangling",
        "sparse.img",
        "",
    ] {
        set_mtime(&data.join(p), t);
        t += 1_000_000_007;
    }
}

/// A first move of a populated volume from `a` to `b`, Complete at `epoch`.
fn first_move(a: &Node, b: &Node, epoch: u64) -> (Sender, ReceiverCopy, Result) {
    a.store.create_empty(APP, 1).unwrap();
    populate(&a.data());
    let mut s = a.sender();
    let mut r = b.receiver(epoch);
    let res = round(&mut s, &mut r, Some(epoch));
    assert!(res.outcome.matched, "{res:?}");
    assert_eq!(tree(&a.data()), tree(&b.data()));
    (s, r, res)
}

#[test]
fn a_move_preserves_files_dirs_symlinks_modes_owners_mtimes_and_holes() {
    let (a, b) = (node(), node());
    let (_, _, res) = first_move(&a, &b, 2);
    assert_eq!(res.outcome.root, res.want_root);
    let mark = b.store.mark(APP).unwrap().unwrap();
    assert_eq!(mark.state, MarkState::Complete);
    assert_eq!((mark.epoch, mark.root), (2, res.want_root));
    assert!(b.store.mountable(APP, 2));
    assert!(!b.store.mountable(APP, 3));
    // Only the sparse file's one data block travelled, and it stayed sparse.
    let sparse = b.data().join("sparse.img");
    assert_eq!(fs::metadata(&sparse).unwrap().len(), 8 << 20);
    assert!(allocated(&sparse) <= 64 * 1024, "{}", allocated(&sparse));
    let data_bytes = 6 + (3 * BLOCK_SIZE as u64 + 100) + 4 + 70_000 + BLOCK_SIZE as u64;
    assert_eq!(res.delta.send_bytes, data_bytes);
    if sys::is_superuser() {
        let m = fs::symlink_metadata(b.data().join("small.txt")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 5678));
    }
    let m = fs::symlink_metadata(b.data().join("multi.bin")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
}

#[test]
fn a_second_round_without_changes_sends_nothing_and_reads_nothing() {
    let (a, b) = (node(), node());
    let (mut s, mut r, _) = first_move(&a, &b, 2);
    let res = round(&mut s, &mut r, Some(2));
    assert_eq!(res.delta, DeltaStats::default());
    assert_eq!(res.chunks, 0);
    assert!(res.outcome.matched);
    assert_eq!(res.outcome.stats.bytes_written, 0);
    // The sender's rescan read no file: every key was in its cache.
    let (_, report) = s.scanner.scan().unwrap();
    assert_eq!(report.hashed_files, 0);
    assert_eq!(report.reused_files, report.files);
}

#[test]
fn deletions_kind_changes_resizes_and_metadata_propagate() {
    let (a, b) = (node(), node());
    let (mut s, mut r, _) = first_move(&a, &b, 2);
    let d = a.data();
    fs::remove_file(d.join("small.txt")).unwrap();
    fs::remove_dir_all(d.join("a/b")).unwrap();
    fs::remove_file(d.join("empty")).unwrap();
    fs::create_dir(d.join("empty")).unwrap(); // file -> dir
    write(&d.join("empty/inside"), b"x");
    fs::remove_dir(d.join("emptydir")).unwrap();
    std::os::unix::fs::symlink("a", d.join("emptydir")).unwrap(); // dir -> symlink
    fs::remove_file(d.join("link")).unwrap();
    std::os::unix::fs::symlink("multi.bin", d.join("link")).unwrap(); // new target
                                                                      // Shrink mid-block, grow by an unaligned amount.
    let f = OpenOptions::new()
        .write(true)
        .open(d.join("multi.bin"))
        .unwrap();
    f.set_len(BLOCK_SIZE as u64 + 10).unwrap();
    let g = OpenOptions::new()
        .append(true)
        .open(d.join("sparse.img"))
        .unwrap();
    g.write_all_at(b"tail", (8 << 20) + 5000).unwrap();
    chmod(&d.join("a"), 0o711);
    set_mtime(&d.join("a/abs"), 5);
    set_mtime(&d, 1_700_000_000_000_000_000);

    let res = round(&mut s, &mut r, Some(3));
    assert!(res.outcome.matched, "{res:?}");
    assert!(res.delta.deletes >= 4, "{:?}", res.delta);
    assert_eq!(tree(&a.data()), tree(&b.data()));
    assert!(b.store.mountable(APP, 3));
}

#[test]
fn scattered_changes_send_only_the_changed_blocks() {
    let (a, b) = (node(), node());
    a.store.create_empty(APP, 1).unwrap();
    let file = a.data().join("table");
    write(&file, &noise(9, 512 * BLOCK_SIZE)); // 2 MiB
    let (mut s, mut r) = (a.sender(), b.receiver(2));
    assert!(round(&mut s, &mut r, None).outcome.matched);
    let changed = [3u64, 97, 200, 301, 505]; // ~1 %
    settle();
    for (n, &i) in changed.iter().enumerate() {
        poke_block(&file, i, 100 + n as u64);
    }
    let res = round(&mut s, &mut r, Some(2));
    assert!(res.outcome.matched);
    assert_eq!(res.delta.send_blocks, changed.len() as u64);
    assert_eq!(
        res.outcome.stats.bytes_written,
        (changed.len() * BLOCK_SIZE) as u64
    );
    assert_eq!(tree(&a.data()), tree(&b.data()));
}

#[test]
fn moving_back_to_an_older_copy_sends_only_the_difference() {
    let (a, b) = (node(), node());
    a.store.create_empty(APP, 1).unwrap();
    write(&a.data().join("table"), &noise(9, 512 * BLOCK_SIZE));
    write(&a.data().join("log/0001"), &noise(10, 100_000));
    // a -> b at epoch 2: b owns the volume, a keeps its old copy.
    let (mut s, mut r) = (a.sender(), b.receiver(1));
    assert!(round(&mut s, &mut r, Some(2)).outcome.matched);
    drop((s, r));
    let table = b.data().join("table");
    let changed = [0u64, 50, 51, 260, 400];
    settle();
    for (n, &i) in changed.iter().enumerate() {
        poke_block(&table, i, 200 + n as u64);
    }
    write(&b.data().join("log/0002"), b"new entry");

    // b -> a at epoch 3: a fresh sender learns what a holds from a's summary.
    let mut s = b.sender();
    let mut r = a.receiver(2);
    let res = round(&mut s, &mut r, Some(3));
    assert!(res.outcome.matched, "{res:?}");
    assert_eq!(tree(&a.data()), tree(&b.data()));
    let expected = changed.len() as u64 * BLOCK_SIZE as u64 + 9;
    assert_eq!(res.delta.send_bytes, expected);
    // Data, summary, block hashes of the differing groups and framing
    // together stay within the 1.5 % of the volume.
    let volume = 512 * BLOCK_SIZE as u64 + 100_000 + 9;
    assert!(
        res.wire_bytes * 1000 <= volume * 15,
        "{} bytes on the wire for a {volume}-byte volume",
        res.wire_bytes
    );
    assert!(a.store.mountable(APP, 3));
}

#[test]
fn the_mark_is_incomplete_during_a_round_and_complete_only_when_named() {
    let (a, b) = (node(), node());
    let (mut s, mut r, res1) = first_move(&a, &b, 2);
    write(&a.data().join("small.txt"), b"changed");

    let (want, _) = s.scanner.scan().unwrap();
    let delta = Delta::compute(&Summary::from_manifest(s.have.as_ref().unwrap()), &want).unwrap();
    let mut round_ = r.begin_round().unwrap();
    let mark = b.store.mark(APP).unwrap().unwrap();
    assert_eq!(mark.state, MarkState::Incomplete);
    assert_eq!(
        (mark.epoch, mark.root),
        (2, res1.want_root),
        "keeps how new it was"
    );
    assert!(!b.store.mountable(APP, 2));
    for item in delta.items() {
        round_.apply_item(item).unwrap();
    }
    let mut reader = delta.chunks(s.scanner.data_dir(), &want);
    for c in &mut reader {
        round_.apply_chunk(c.unwrap()).unwrap();
    }
    let (expected, end) = reader.finish().unwrap();
    s.have = Some(expected);
    // A round before the last matches but names no epoch: still Incomplete.
    let out = round_.finish(&end, None).unwrap();
    assert!(out.matched);
    assert_eq!(out.mark.state, MarkState::Incomplete);
    assert!(!b.store.mountable(APP, 2));
    // The last round names the handoff epoch.
    let res = round(&mut s, &mut r, Some(3));
    assert_eq!(res.delta, DeltaStats::default());
    assert_eq!(res.outcome.mark.state, MarkState::Complete);
    assert_eq!(res.outcome.mark.epoch, 3);
    assert_eq!(res.outcome.mark.root, want.root());
    assert!(b.store.mountable(APP, 3));
}

#[test]
fn a_corrupted_block_in_flight_leaves_the_copy_incomplete() {
    let (a, b) = (node(), node());
    a.store.create_empty(APP, 1).unwrap();
    write(&a.data().join("f"), &noise(5, 40 * BLOCK_SIZE));
    let (mut s, mut r) = (a.sender(), b.receiver(1));
    let res = round_with(
        &mut s,
        &mut r,
        Some(2),
        |_| {},
        |c| match c {
            Chunk::Data(mut d) => {
                d.bytes[BLOCK_SIZE + 7] ^= 0x40;
                Chunk::Data(d)
            }
            z => z,
        },
    );
    assert!(!res.outcome.matched);
    assert_ne!(res.outcome.root, res.want_root);
    assert_eq!(res.outcome.mark.state, MarkState::Incomplete);
    assert!(!b.store.mountable(APP, 2));
    // The sender now believes the receiver is whole, so the protocol falls
    // back to the receiver's own summary, which shows the bad block.
    s.have = None;
    let res = round(&mut s, &mut r, Some(2));
    assert!(res.outcome.matched);
    assert_eq!(res.delta.send_blocks, 1);
    assert!(b.store.mountable(APP, 2));
}

#[test]
fn a_block_damaged_on_the_receiver_is_found_after_a_restart() {
    let (a, b) = (node(), node());
    let (mut s, r, _) = first_move(&a, &b, 2);
    drop(r);
    // Damage a block and hide it behind the old mtime: ctime still tells.
    let victim = b.data().join("multi.bin");
    settle();
    let mtime = fs::metadata(&victim).unwrap();
    let mtime = mtime.mtime() * 1_000_000_000 + mtime.mtime_nsec();
    poke_block(&victim, 1, 999);
    set_mtime(&victim, mtime);
    write(&a.data().join("small.txt"), b"something else");
    let mut r = b.receiver(1);
    let res = round(&mut s, &mut r, Some(3));
    assert!(!res.outcome.matched);
    assert!(!b.store.mountable(APP, 3));
    s.have = None;
    let res = round(&mut s, &mut r, Some(3));
    assert!(res.outcome.matched);
    assert_eq!(tree(&a.data()), tree(&b.data()));
}

#[test]
fn blocks_written_while_being_sent_are_accounted_for() {
    let (a, b) = (node(), node());
    a.store.create_empty(APP, 1).unwrap();
    write(&a.data().join("f"), &noise(5, 64 * BLOCK_SIZE));
    let (mut s, mut r) = (a.sender(), b.receiver(1));
    // The app writes after the scan, before the blocks are read.
    let res = round_with(
        &mut s,
        &mut r,
        None,
        |data| {
            settle();
            poke_block(&data.join("f"), 10, 77)
        },
        |c| c,
    );
    assert_ne!(res.outcome.root, res.want_root, "the scan is already stale");
    assert!(res.outcome.matched, "the sender knows what it really sent");
    // The final round (app stopped) sends just the rest: here nothing.
    let res = round(&mut s, &mut r, Some(2));
    assert!(res.outcome.matched);
    assert_eq!(tree(&a.data()), tree(&b.data()));
}

#[test]
fn blocks_that_become_zero_are_punched_out() {
    let (a, b) = (node(), node());
    a.store.create_empty(APP, 1).unwrap();
    let f = a.data().join("f");
    write(&f, &noise(5, 256 * BLOCK_SIZE)); // 1 MiB
    let (mut s, mut r) = (a.sender(), b.receiver(1));
    assert!(round(&mut s, &mut r, None).outcome.matched);
    let before = allocated(&b.data().join("f"));
    settle();
    let w = OpenOptions::new().write(true).open(&f).unwrap();
    w.write_all_at(&vec![0u8; 128 * BLOCK_SIZE], 64 * BLOCK_SIZE as u64)
        .unwrap();
    let res = round(&mut s, &mut r, Some(2));
    assert!(res.outcome.matched);
    assert_eq!(res.delta.zero_blocks, 128);
    assert_eq!(res.delta.send_blocks, 0);
    let after = allocated(&b.data().join("f"));
    assert!(
        after + 100 * BLOCK_SIZE as u64 <= before,
        "{before} -> {after}"
    );
    assert_eq!(tree(&a.data()), tree(&b.data()));
}

#[test]
fn owners_are_recorded_when_they_cannot_be_applied() {
    if !sys::is_superuser() {
        return; // needs a source with foreign owners
    }
    let (a, b) = (node(), node());
    a.store.create_empty(APP, 1).unwrap();
    populate(&a.data());
    let mut s = a.sender();
    let no_chown = ApplyOptions {
        chown: false,
        ..ApplyOptions::default()
    };
    let mut r = ReceiverCopy::open(&b.store, APP, 1, scan_opts(), no_chown).unwrap();
    let res = round(&mut s, &mut r, Some(2));
    assert!(res.outcome.matched, "{res:?}");
    assert!(res.outcome.notes.iter().any(|n| n.contains("small.txt")));
    let m = fs::symlink_metadata(b.data().join("small.txt")).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0), "left as is");
    // A restart rescans and still sees the owners it was asked to give.
    r.save_cache().unwrap();
    drop(r);
    let r = ReceiverCopy::open(&b.store, APP, 1, scan_opts(), no_chown).unwrap();
    assert_eq!(r.manifest().root(), res.want_root);
}

#[test]
fn a_rescan_reads_only_changed_files_and_recent_ones() {
    let a = node();
    a.store.create_empty(APP, 1).unwrap();
    for i in 0..5 {
        write(&a.data().join(format!("f{i}")), &noise(i, 10_000));
    }
    let mut sc = a.store.scanner(APP, scan_opts()).unwrap();
    let (m1, r1) = sc.scan().unwrap();
    assert_eq!(r1.hashed_files, 5);
    settle();
    write(&a.data().join("f2"), &noise(50, 10_000));
    let (m2, r2) = sc.scan().unwrap();
    assert_eq!((r2.hashed_files, r2.reused_files), (1, 4));
    assert_ne!(m1.root(), m2.root());
    // Saved and loaded, the cache still answers.
    sc.save().unwrap();
    let mut sc = a.store.scanner(APP, scan_opts()).unwrap();
    let (m3, r3) = sc.scan().unwrap();
    assert_eq!((r3.hashed_files, m3.root()), (0, m2.root()));
    // With the real racy window, files changed a moment ago are read again.
    let mut sc = a.store.scanner(APP, ScanOptions::default()).unwrap();
    assert_eq!(sc.scan().unwrap().1.hashed_files, 5);
    // A damaged cache file is dropped, not trusted.
    let cache = a.store.volume_dir(APP).unwrap().join("cache");
    let mut bytes = fs::read(&cache).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&cache, bytes).unwrap();
    let mut sc = a.store.scanner(APP, scan_opts()).unwrap();
    assert_eq!(sc.scan().unwrap().1.hashed_files, 5);
}

#[test]
fn copies_are_set_aside_under_their_epoch() {
    let a = node();
    a.store.create_empty(APP, 4).unwrap();
    assert!(a.store.mountable(APP, 4));
    assert!(a.store.create_empty(APP, 5).is_err());
    let aside = a.store.set_aside(APP).unwrap().unwrap();
    assert!(aside.ends_with("db.stale-4"));
    assert!(!a.store.exists(APP).unwrap());
    assert!(!a.store.mountable(APP, 4));
    a.store.create_empty(APP, 4).unwrap();
    let second = a.store.set_aside(APP).unwrap().unwrap();
    assert!(second.ends_with("db.stale-4-1"));
    let stale = a.store.stale_copies(APP).unwrap();
    assert_eq!(stale.len(), 2);
    assert!(stale.iter().all(|c| c.epoch == 4 && c.mark.is_some()));
    assert_eq!(a.store.set_aside(APP).unwrap(), None);
    assert!(a.store.volume_dir("../etc").is_err());
    // The owner's own copy never receives.
    a.store.create_empty(APP, 6).unwrap();
    assert!(ReceiverCopy::open(&a.store, APP, 6, scan_opts(), ApplyOptions::default()).is_err());
}

fn header(path: &str, kind: EntryKind) -> EntryHeader {
    EntryHeader {
        path: RelPath::new(path.as_bytes()).unwrap(),
        meta: super::Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
        },
        kind,
    }
}

fn upsert(path: &str, kind: EntryKind, content: Content) -> DeltaItem {
    DeltaItem::Upsert {
        header: header(path, kind),
        content,
    }
}

#[test]
fn a_receiver_refuses_what_would_escape_or_does_not_fit() {
    let b = node();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(b.data()).unwrap();
    std::os::unix::fs::symlink(outside.path(), b.data().join("link")).unwrap();
    let mut r = b.receiver(1);
    let file = EntryKind::File { size: 10 };

    // Writing through a symlinked parent, old or just sent.
    let mut round_ = r.begin_round().unwrap();
    let e = round_
        .apply_item(upsert("link/x", file.clone(), Content::Replace))
        .unwrap_err();
    assert!(e.to_string().contains("symlink"), "{e}");
    drop(round_);
    let mut round_ = r.begin_round().unwrap();
    let target = outside.path().as_os_str().as_encoded_bytes().to_vec();
    round_
        .apply_item(upsert(
            "evil",
            EntryKind::Symlink { target },
            Content::Replace,
        ))
        .unwrap();
    assert!(round_
        .apply_item(upsert("evil/x", file.clone(), Content::Replace))
        .is_err());
    drop(round_);
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);

    // Order, root, chunk bounds, a cut stream.
    let mut round_ = r.begin_round().unwrap();
    assert!(round_
        .apply_item(DeltaItem::Delete(RelPath::root()))
        .is_err());
    round_
        .apply_item(upsert("b", file.clone(), Content::Replace))
        .unwrap();
    assert!(round_
        .apply_item(upsert("a", file.clone(), Content::Replace))
        .is_err());
    assert!(round_
        .apply_item(DeltaItem::Delete(RelPath::new(&b"b"[..]).unwrap()))
        .is_err());
    let chunk = |path_id, index, len| {
        Chunk::Data(BlockChunk {
            path_id,
            index,
            bytes: vec![1; len],
        })
    };
    assert!(
        round_.apply_chunk(chunk(7, 0, 10)).is_err(),
        "no such path id"
    );
    assert!(
        round_.apply_chunk(chunk(0, 0, 11)).is_err(),
        "past the size"
    );
    assert!(
        round_.apply_chunk(chunk(0, 1, 10)).is_err(),
        "past the blocks"
    );
    assert!(round_
        .apply_chunk(Chunk::Zero(ZeroRun {
            path_id: 0,
            index: 0,
            count: u64::MAX
        }))
        .is_err());
    round_.apply_chunk(chunk(0, 0, 10)).unwrap();
    assert!(round_
        .apply_item(upsert("c", file, Content::Replace))
        .is_err());
    let end = RoundEnd {
        chunks: 99,
        root: [0; 32],
    };
    assert!(round_.finish(&end, Some(2)).is_err());
    assert_eq!(
        b.store.mark(APP).unwrap().unwrap().state,
        MarkState::Incomplete
    );

    // Sizes over the receiver's limits are refused before any allocation.
    let tight = ApplyOptions {
        limits: Limits {
            max_entries: 100,
            max_bytes: 1 << 20,
        },
        ..ApplyOptions::default()
    };
    let mut r = ReceiverCopy::open(&b.store, APP, 1, scan_opts(), tight).unwrap();
    let mut round_ = r.begin_round().unwrap();
    let huge = EntryKind::File { size: u64::MAX };
    assert!(round_
        .apply_item(upsert("huge", huge, Content::Replace))
        .is_err());
}

#[test]
fn a_peer_summary_is_checked_item_by_item() {
    let dir = EntryKind::Dir;
    let push_all = |items: Vec<SummaryItem>| -> super::error::Result<Summary> {
        let mut b = SummaryBuilder::new(Limits {
            max_entries: 10,
            max_bytes: 1 << 20,
        });
        for i in items {
            b.push(i)?;
        }
        b.finish()
    };
    let e = |p: &str, k: EntryKind| SummaryItem::Entry(header(p, k));
    assert!(push_all(vec![]).unwrap().is_empty());
    assert!(push_all(vec![e("a", dir.clone())]).is_err(), "root first");
    assert!(
        push_all(vec![e("", dir.clone()), e("a/b", dir.clone())]).is_err(),
        "orphan"
    );
    assert!(push_all(vec![
        e("", dir.clone()),
        e("b", dir.clone()),
        e("a", dir.clone())
    ])
    .is_err());
    let f = EntryKind::File {
        size: 20 * BLOCK_SIZE as u64,
    };
    assert!(
        push_all(vec![e("", dir.clone()), e("f", f.clone())]).is_err(),
        "groups missing"
    );
    let groups = |first, n| SummaryItem::Groups {
        first,
        hashes: vec![[1; 32]; n],
    };
    assert!(push_all(vec![e("", dir.clone()), e("f", f.clone()), groups(0, 3)]).is_err());
    assert!(push_all(vec![e("", dir.clone()), e("f", f.clone()), groups(1, 2)]).is_err());
    let ok = push_all(vec![
        e("", dir.clone()),
        e("f", f.clone()),
        groups(0, 1),
        groups(1, 1),
    ]);
    let mut s = ok.unwrap();
    let big = EntryKind::File { size: 2 << 20 };
    assert!(
        push_all(vec![e("", dir.clone()), e("f", big)]).is_err(),
        "over max_bytes"
    );
    // Block hashes that do not match the group hash sent before are refused.
    let req = LeafRequest {
        path: RelPath::new(&b"f"[..]).unwrap(),
        groups: vec![0],
    };
    let reply = LeafReply {
        leaves: vec![[2; 32]; 16],
    };
    assert!(s.add_leaves(&req, reply).is_err());
}

#[test]
fn holes_are_not_read_and_huge_sparse_files_fail_the_scan_not_the_node() {
    let a = node();
    a.store.create_empty(APP, 1).unwrap();
    let f = File::create(a.data().join("sparse")).unwrap();
    f.set_len(64 << 20).unwrap();
    f.write_all_at(b"x", 40 << 20).unwrap();
    let mut sc = a.store.scanner(APP, scan_opts()).unwrap();
    let (m, report) = sc.scan().unwrap();
    assert!(report.hashed_bytes <= 1 << 20, "{report:?}");
    let data = m.get(&RelPath::new(&b"sparse"[..]).unwrap()).unwrap();
    let data = data.file().unwrap();
    assert_eq!(data.leaves().len(), (64 << 20) / BLOCK_SIZE);
    assert!(!data.is_zero_block((40 << 20) / BLOCK_SIZE as u64));
    // An app's 1 TiB hole would cost 8 GiB of block hashes: refused.
    f.set_len(1 << 40).unwrap();
    let e = sc.scan().unwrap_err().to_string();
    assert!(e.contains("holes count"), "{e}");
}

/// A write through a shared mapping to a page that was already dirty when
/// the file was last read still shows up in the next scan: the scan writes
/// dirty pages back first, so the second write faults and moves mtime.
#[test]
fn writes_through_mmap_are_seen_by_the_next_scan() {
    let n = node();
    n.store.create_empty(APP, 1).unwrap();
    let path = n.data().join("mapped");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.set_len(BLOCK_SIZE as u64).unwrap();
    // SAFETY: a fresh shared mapping of a file this test owns, unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            BLOCK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::unix::io::AsRawFd::as_raw_fd(&file),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let bytes = map as *mut u8;
    let mut scanner = n.store.scanner(APP, scan_opts()).unwrap();
    // SAFETY: within the mapping's BLOCK_SIZE bytes.
    unsafe { *bytes = 1 };
    let (first, _) = scanner.scan().unwrap();
    // Past a timestamp tick, then the same page again.
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: as above.
    unsafe { *bytes.add(1) = 2 };
    let (second, report) = scanner.scan().unwrap();
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(map, BLOCK_SIZE) };
    assert_eq!(report.hashed_files, 1, "the mapped file is read again");
    assert_ne!(first.root(), second.root(), "and its new content is seen");
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// A source with setuid and setgid files and a setgid directory.
fn setid_source(a: &Node) {
    a.store.create_empty(APP, 1).unwrap();
    let data = a.data();
    write(&data.join("bin/tool"), b"#!/bin/sh\n");
    write(&data.join("bin/gtool"), b"#!/bin/sh\n");
    fs::create_dir_all(data.join("shared")).unwrap();
    write(&data.join("shared/plain"), b"x");
    chmod(&data.join("bin/tool"), 0o4755);
    chmod(&data.join("bin/gtool"), 0o2711);
    chmod(&data.join("shared"), 0o2775);
}

#[test]
fn setuid_bits_are_recorded_but_written_only_when_the_app_preserves_them() {
    let (a, b) = (node(), node());
    setid_source(&a);
    let mut s = a.sender();
    let mut r = b.receiver_with(1, ApplyOptions::default());
    let res = round(&mut s, &mut r, Some(2));
    // The copy is the sender's volume: same root, Complete at the epoch...
    assert!(res.outcome.matched, "{res:?}");
    assert_eq!(res.outcome.root, res.want_root);
    assert!(b.store.mountable(APP, 2));
    // ...but no file on this disk is setuid or setgid; a directory's setgid
    // (group inheritance) stays.
    assert_eq!(mode_of(&b.data().join("bin/tool")), 0o755);
    assert_eq!(mode_of(&b.data().join("bin/gtool")), 0o711);
    assert_eq!(mode_of(&b.data().join("shared")), 0o2775);
    assert_eq!(
        mode_of(&b.data().join("shared/plain")),
        mode_of(&a.data().join("shared/plain"))
    );
    assert!(
        res.outcome
            .notes
            .iter()
            .any(|n| n.contains("bin/tool") && n.contains("4755")),
        "{:?}",
        res.outcome.notes
    );

    // The stripped bits do not make the copy differ: the next round sends
    // nothing, and a new session (which asks the receiver what it holds)
    // finds nothing to send either.
    let again = round(&mut s, &mut r, Some(2));
    assert_eq!(again.delta, DeltaStats::default());
    assert!(again.outcome.matched);
    r.save_cache().unwrap();
    drop(r);
    let mut r = b.receiver_with(1, ApplyOptions::default());
    assert_eq!(
        r.manifest().root(),
        res.want_root,
        "a rescan sees the sender's modes"
    );
    let mut fresh = a.sender();
    let resumed = round(&mut fresh, &mut r, Some(3));
    assert_eq!(resumed.delta, DeltaStats::default(), "nothing is re-sent");
    assert!(b.store.mountable(APP, 3));

    // Moved onward, the copy carries the real modes: a receiver that
    // preserves them writes them.
    let c = node();
    let mut onward = Sender {
        scanner: b.store.scanner(APP, scan_opts()).unwrap(),
        have: None,
    };
    let mut rc = c.receiver_with(
        3,
        ApplyOptions {
            preserve_setuid: true,
            ..ApplyOptions::default()
        },
    );
    let res = round(&mut onward, &mut rc, Some(4));
    assert!(res.outcome.matched);
    assert_eq!(mode_of(&c.data().join("bin/tool")), 0o4755);
    assert_eq!(mode_of(&c.data().join("bin/gtool")), 0o2711);
    assert!(res.outcome.notes.iter().all(|n| !n.contains("mode")));
}

#[test]
fn a_real_chmod_of_a_stripped_file_is_a_change() {
    let (a, b) = (node(), node());
    setid_source(&a);
    let mut s = a.sender();
    let mut r = b.receiver_with(1, ApplyOptions::default());
    let first = round(&mut s, &mut r, None);
    assert!(first.outcome.matched);
    chmod(&b.data().join("bin/tool"), 0o700);
    r.refresh().unwrap();
    assert_ne!(r.manifest().root(), first.want_root);
    // The sender, told what the copy now holds, puts the mode back.
    let mut fresh = a.sender();
    let res = round(&mut fresh, &mut r, Some(2));
    assert!(res.outcome.matched, "{res:?}");
    assert_eq!(res.delta.send_bytes, 0, "only metadata travelled");
    assert_eq!(mode_of(&b.data().join("bin/tool")), 0o755);
}

fn available(path: &Path) -> u64 {
    sys::available_bytes(path).unwrap()
}

#[test]
fn a_round_that_would_eat_into_the_reserve_is_refused() {
    let (a, b) = (node(), node());
    a.store.create_empty(APP, 1).unwrap();
    write(&a.data().join("big"), &noise(9, 32 << 20));
    let mut s = a.sender();

    // Already below the reserve: the round does not even start, and the
    // copy is left as it was (no Incomplete mark written).
    let gib = 1u64 << 30;
    let over = ApplyOptions {
        reserve: available(b.store.root()) + gib,
        ..ApplyOptions::default()
    };
    let mut r = b.receiver_with(1, over);
    let err = r.begin_round().err().expect("refused");
    assert!(matches!(err, VolumeError::Reserve(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("receiving would leave less than the ")
            && text.contains(" reserve free on this node's disk"),
        "{text}"
    );
    assert!(b.store.mark(APP).unwrap().is_none());

    // Room for the start but not for the data: a chunk is refused before
    // it is written, so the 32 MiB never land.
    let tight = ApplyOptions {
        reserve: available(b.store.root()).saturating_sub(4 << 20),
        ..ApplyOptions::default()
    };
    let mut r = b.receiver_with(1, tight);
    let (want, _) = s.scanner.scan().unwrap();
    let mut summary = SummaryBuilder::new(Limits::default());
    for item in r.summary_items().unwrap() {
        summary.push(item).unwrap();
    }
    let have = summary.finish().unwrap();
    let delta = Delta::compute(&have, &want).unwrap();
    let refused = (|| -> std::result::Result<(), VolumeError> {
        let mut round = r.begin_round()?;
        for item in delta.items() {
            round.apply_item(item)?;
        }
        for chunk in &mut delta.chunks(s.scanner.data_dir(), &want) {
            round.apply_chunk(chunk?)?;
        }
        Ok(())
    })()
    .expect_err("the round crosses the reserve");
    assert!(matches!(refused, VolumeError::Reserve(_)), "{refused}");
    // Refused before its first chunk (other tests share the disk, so the
    // room left moves), the file may not exist at all: nothing landed.
    let landed = fs::metadata(b.data().join("big")).map_or(0, |m| m.blocks() * 512);
    assert!(landed < 32 << 20, "{landed} bytes of the 32 MiB landed");
    assert!(!b.store.mountable(APP, 2));
}

#[test]
fn the_reserve_shortfall_names_the_node() {
    let shortfall = super::ReserveShortfall {
        reserve: 1 << 30,
        available: 200 << 20,
        writing: 0,
    };
    assert!(shortfall
        .describe("n2")
        .starts_with("receiving would leave less than the 1.0 GiB reserve free on n2's disk (200.0 MiB available"));
}

#[test]
fn a_complete_copy_survives_a_power_cut() {
    let (_t, mount) = crate::durable::lazyfs_for_test();
    let a = node();
    a.store.create_empty(APP, 1).unwrap();
    // More entries than the round fsyncs one by one: it makes them durable
    // at once, which on FUSE syncfs does not do.
    for i in 0..80 {
        write(&a.data().join(format!("many/{i}")), &noise(i, 3000));
    }
    populate(&a.data());
    let b_dir = mount.path().join("node-b");
    crate::durable::create_dir_all(&b_dir, 0o700).unwrap();
    let b = Node {
        _dir: tempfile::tempdir().unwrap(),
        store: VolumeStore::open(&b_dir).unwrap(),
    };
    let (mut s, mut r) = (a.sender(), b.receiver(2));
    let res = round(&mut s, &mut r, Some(2));
    assert!(res.outcome.matched, "{res:?}");
    assert_eq!(res.outcome.mark.state, MarkState::Complete);
    drop((r, b));

    let mount = mount.power_cycle().unwrap();
    let store = VolumeStore::open(&b_dir).unwrap();
    let mark = store.mark(APP).unwrap().expect("the mark survives");
    assert_eq!((mark.state, mark.epoch), (MarkState::Complete, 2));
    // Complete means it verifies against its root.
    let (want, got) = (tree(&a.data()), tree(&store.data_dir(APP).unwrap()));
    let differ: Vec<_> = want
        .iter()
        .filter(|(p, w)| got.get(*p) != Some(*w))
        .map(|(p, w)| format!("{}: {w} / {:?}", p.display(), got.get(p)))
        .collect();
    assert!(differ.is_empty(), "lost in the cut:\n{}", differ.join("\n"));
    let (scanned, _) = store.scanner(APP, scan_opts()).unwrap().scan().unwrap();
    assert_eq!(scanned.root(), mark.root);
    drop(store);
    mount.unmount().unwrap();
}
