//! The backends on real file systems: each test makes its own loop-mounted
//! btrfs, XFS or ext4 (`LoopFs`), so they need root and the mkfs tools and
//! fail, saying what is missing, without them. Trees are compared by the
//! scanner's root hash, which covers every entry's kind, mode, owner, mtime
//! and content (and nothing a volume does not hold, like fifos).

use super::loopfs::{LoopFs, LoopFsKind};
use super::*;
use crate::volume::cache::HashCache;
use crate::volume::hash::{Hash, BLOCK_SIZE};
use crate::volume::scan::{self, ScanOptions};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};

const IMAGE_BYTES: u64 = 512 << 20;
const MIB: u64 = 1 << 20;

struct Node {
    backend: Backend,
    /// A volume's live data directory, made by the backend.
    live: PathBuf,
    /// Where its points go.
    points: PathBuf,
    // Last: unmounted after everything above is dropped.
    fs: LoopFs,
}

fn mounted(kind: LoopFsKind) -> LoopFs {
    LoopFs::new(kind, IMAGE_BYTES)
        .unwrap_or_else(|e| panic!("the volume backend tests cannot run: {e}"))
}

fn node(kind: LoopFsKind) -> Node {
    let fs = mounted(kind);
    let root = fs.path().join("volumes");
    fs::create_dir(&root).unwrap();
    let backend = Backend::select(&root, BackendChoice::Auto).unwrap();
    let live = root.join("db").join("data");
    backend.create_volume_dir(&live).unwrap();
    let points = root.join("db").join("points");
    fs::create_dir(&points).unwrap();
    Node {
        backend,
        live,
        points,
        fs,
    }
}

fn root_of(path: &Path) -> Hash {
    let opts = ScanOptions {
        racy_window: Duration::ZERO,
        ..ScanOptions::default()
    };
    scan::scan(path, &mut HashCache::new(), &opts)
        .unwrap()
        .0
        .root()
}

/// Bytes that differ from block to block and from seed to seed.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.finalize_xof().fill(&mut out);
    out
}

fn write(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap();
}

fn write_at(path: &Path, off: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(path: &Path, secs: i64) {
    crate::volume::sys::set_mtime_nofollow(path, secs * 1_000_000_000 + 123).unwrap();
}

/// Every kind of entry a volume holds, odd modes and owners, a sparse file,
/// a symlink out of the tree (to `outside`), and a fifo (not part of one).
fn fill(dir: &Path, outside: &Path) {
    fs::create_dir_all(dir.join("a/b")).unwrap();
    fs::create_dir(dir.join("empty")).unwrap();
    write(&dir.join("a/small"), b"hello volume");
    std::os::unix::fs::chown(dir.join("a/small"), Some(1000), Some(1001)).unwrap();
    chmod(&dir.join("a/small"), 0o640);
    write(&dir.join("a/b/big"), &pattern(1, 3 * MIB as usize + 17));
    write(&dir.join("a/empty-file"), b"");
    write(&dir.join("setuid"), b"#!/bin/sh\n");
    chmod(&dir.join("setuid"), 0o4755);
    let sparse = File::create(dir.join("sparse")).unwrap();
    sparse.set_len(16 * MIB).unwrap();
    sparse
        .write_all_at(&pattern(2, BLOCK_SIZE), 8 * MIB)
        .unwrap();
    std::os::unix::fs::symlink(fs::canonicalize(outside).unwrap(), dir.join("escape")).unwrap();
    std::os::unix::fs::symlink("a/small", dir.join("link")).unwrap();
    let fifo =
        std::ffi::CString::new(dir.join("fifo").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    chmod(&dir.join("a/b"), 0o750);
    for (p, t) in [
        ("a/small", 1_000_000),
        ("link", 1_100_000),
        ("a/b", 1_200_000),
        ("a", 1_300_000),
    ] {
        set_mtime(&dir.join(p), t);
    }
}

/// Changes of every sort: data in place, removal, a new directory and
/// file, a mode, a symlink's target, a truncation.
fn mutate(dir: &Path) {
    write_at(&dir.join("a/b/big"), MIB, &pattern(3, 2 * BLOCK_SIZE));
    fs::remove_file(dir.join("a/small")).unwrap();
    fs::create_dir(dir.join("c")).unwrap();
    write(&dir.join("c/new"), &pattern(4, 5000));
    chmod(&dir.join("empty"), 0o755);
    fs::remove_file(dir.join("link")).unwrap();
    std::os::unix::fs::symlink("setuid", dir.join("link")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(dir.join("sparse"))
        .unwrap()
        .set_len(4096)
        .unwrap();
}

fn outside_file(n: &Node) -> PathBuf {
    let outside = n.fs.path().join("outside");
    write(&outside, b"not in the volume");
    outside
}

#[test]
fn choices_parse_and_a_bad_one_lists_them() {
    assert_eq!("auto".parse(), Ok(BackendChoice::Auto));
    assert_eq!("btrfs".parse(), Ok(BackendChoice::Btrfs));
    assert_eq!("xfs".parse(), Ok(BackendChoice::Xfs));
    assert_eq!("dir".parse(), Ok(BackendChoice::Dir));
    let err = "zfs".parse::<BackendChoice>().unwrap_err();
    assert!(
        err.contains("\"zfs\"") && err.contains("auto, btrfs, xfs or dir"),
        "{err}"
    );
    assert_eq!(BackendChoice::default(), BackendChoice::Auto);
}

#[test]
fn auto_picks_each_file_systems_backend_and_explicit_choices_say_why_not() {
    let (btrfs, xfs) = (mounted(LoopFsKind::Btrfs), mounted(LoopFsKind::Xfs));
    let (plain_xfs, ext4) = (mounted(LoopFsKind::XfsNoReflink), mounted(LoopFsKind::Ext4));
    let auto = |fs: &LoopFs| Backend::select(fs.path(), BackendChoice::Auto).unwrap();
    assert_eq!(auto(&btrfs).kind(), BackendKind::Btrfs);
    assert!(!auto(&btrfs).needs_pause());
    assert_eq!(auto(&xfs).kind(), BackendKind::Xfs);
    assert!(auto(&xfs).needs_pause());
    assert_eq!(auto(&ext4).kind(), BackendKind::Dir);
    assert!(auto(&ext4).needs_pause());
    let fallback = auto(&plain_xfs);
    assert_eq!(fallback.kind(), BackendKind::Dir);
    assert!(
        fallback.describe().contains("not xfs"),
        "{}",
        fallback.describe()
    );
    let line = auto(&btrfs).describe();
    assert!(
        line.starts_with("volume backend: btrfs (snapshots, no pause) on ")
            && line.contains(&btrfs.path().display().to_string()),
        "{line}"
    );

    let refused = |fs: &LoopFs, choice| Backend::select(fs.path(), choice).unwrap_err();
    let path = |fs: &LoopFs| fs.path().display().to_string();
    let e = refused(&xfs, BackendChoice::Btrfs);
    assert!(
        e.contains(&path(&xfs)) && e.contains("is on xfs, not btrfs"),
        "{e}"
    );
    let e = refused(&ext4, BackendChoice::Btrfs);
    assert!(
        e.contains(&path(&ext4)) && e.contains("is on ext4, not btrfs"),
        "{e}"
    );
    let e = refused(&ext4, BackendChoice::Xfs);
    assert!(
        e.contains(&path(&ext4)) && e.contains("is on ext4") && e.contains("FICLONE"),
        "{e}"
    );
    let e = refused(&plain_xfs, BackendChoice::Xfs);
    assert!(
        e.contains("is on xfs") && e.contains("mkfs.xfs -m reflink=1"),
        "{e}"
    );
    for fs in [&btrfs, &xfs, &ext4] {
        let dir = Backend::select(fs.path(), BackendChoice::Dir).unwrap();
        assert_eq!(dir.kind(), BackendKind::Dir);
    }
    // Explicit xfs means reflink copies, which btrfs can do too.
    let reflink = Backend::select(btrfs.path(), BackendChoice::Xfs).unwrap();
    assert_eq!(reflink.kind(), BackendKind::Xfs);
    // The probes clean up after themselves.
    for fs in [&btrfs, &xfs, &plain_xfs, &ext4] {
        let left: Vec<_> = fs::read_dir(fs.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".flocker"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    let missing = Backend::select(&btrfs.path().join("nope"), BackendChoice::Auto).unwrap_err();
    assert!(missing.contains("nope"), "{missing}");
}

/// A capture equals the live tree, and stays as it was while the live tree
/// changes; capturing again (same point path) follows the change.
fn capture_holds_one_instant(kind: LoopFsKind, method: CaptureMethod) {
    let n = node(kind);
    let outside = outside_file(&n);
    fill(&n.live, &outside);
    let point = n.points.join("1");
    let stats = n.backend.capture(&n.live, &point).unwrap();
    assert_eq!(stats.method, method);
    assert_eq!(method.needs_pause(), n.backend.needs_pause());
    let before = root_of(&n.live);
    assert_eq!(
        root_of(&point),
        before,
        "{kind}: the point differs from the live tree"
    );
    assert!(fs::symlink_metadata(point.join("escape"))
        .unwrap()
        .file_type()
        .is_symlink());

    mutate(&n.live);
    let after = root_of(&n.live);
    assert_ne!(after, before);
    assert_eq!(
        root_of(&point),
        before,
        "{kind}: the point moved with the live tree"
    );
    let again = n.backend.capture(&n.live, &point).unwrap();
    assert_eq!(root_of(&point), after, "{kind}");
    let inside = n.backend.capture(&n.live, &n.live.join("p")).unwrap_err();
    assert!(
        inside.to_string().contains("one holds the other"),
        "{inside}"
    );
    if method == CaptureMethod::Update {
        assert!(again.removed >= 1, "{again:?}");
    }
    assert_eq!(fs::read(&outside).unwrap(), b"not in the volume");
}

#[test]
fn btrfs_capture_is_a_read_only_snapshot_of_one_instant() {
    capture_holds_one_instant(LoopFsKind::Btrfs, CaptureMethod::Snapshot);
    let n = node(LoopFsKind::Btrfs);
    write(&n.live.join("f"), b"x");
    let point = n.points.join("1");
    n.backend.capture(&n.live, &point).unwrap();
    let e = fs::write(point.join("g"), b"y").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
}

#[test]
fn xfs_capture_is_a_reflink_copy_of_one_instant() {
    capture_holds_one_instant(LoopFsKind::Xfs, CaptureMethod::Reflink);
}

#[test]
fn dir_capture_updates_the_previous_point_to_one_instant() {
    capture_holds_one_instant(LoopFsKind::Ext4, CaptureMethod::Update);
}

/// 64 MiB of which 10 MiB (runs of 5 blocks every 32) change between two
/// captures: the dir backend writes exactly those bytes, xfs shares every
/// byte and writes none, btrfs neither. Prints the capture times.
fn capture_of_changed_blocks(kind: LoopFsKind) {
    let n = node(kind);
    let big = n.live.join("big");
    write(&big, &pattern(5, 64 * MIB as usize));
    for i in 0..20 {
        write(&n.live.join(format!("small-{i}")), &pattern(100 + i, 3000));
    }
    let point = n.points.join("p");
    let first = n.backend.capture(&n.live, &point).unwrap();
    let blocks = 64 * MIB / BLOCK_SIZE as u64;
    let mut changed = 0;
    for b in (0..blocks).filter(|b| b % 32 < 5) {
        write_at(&big, b * BLOCK_SIZE as u64, &pattern(b + 7, BLOCK_SIZE));
        changed += BLOCK_SIZE as u64;
    }
    assert_eq!(changed, 10 * MIB);
    let second = n.backend.capture(&n.live, &point).unwrap();
    assert_eq!(root_of(&point), root_of(&n.live), "{kind}");
    let third = n.backend.capture(&n.live, &point).unwrap();
    let total = 64 * MIB + 20 * 3000;
    match second.method {
        CaptureMethod::Update => {
            assert_eq!(first.bytes_copied, total);
            assert_eq!(second.bytes_copied, changed, "{second:?}");
            assert_eq!(second.files, 1, "{second:?}");
            assert_eq!(third.bytes_copied, 0, "{third:?}");
        }
        CaptureMethod::Reflink => {
            assert_eq!((second.bytes_reflinked, second.bytes_copied), (total, 0));
        }
        CaptureMethod::Snapshot => {
            assert_eq!((second.bytes_reflinked, second.bytes_copied), (0, 0));
        }
    }
    eprintln!(
        "capture on {kind} ({:?}): 64 MiB first {:?}, 10 MiB changed {:?}, unchanged {:?}",
        second.method, first.elapsed, second.elapsed, third.elapsed
    );
}

#[test]
fn btrfs_capture_of_changed_blocks() {
    capture_of_changed_blocks(LoopFsKind::Btrfs);
}

#[test]
fn xfs_capture_of_changed_blocks() {
    capture_of_changed_blocks(LoopFsKind::Xfs);
}

#[test]
fn dir_capture_writes_only_the_changed_blocks() {
    capture_of_changed_blocks(LoopFsKind::Ext4);
}

/// A clone equals its source, is writable, and writing it leaves the
/// source as it was. On dir, cloning again into the used clone (double
/// buffering) writes only what differs.
fn clone_keeps_its_source(kind: LoopFsKind, method: CaptureMethod) {
    let n = node(kind);
    let outside = outside_file(&n);
    fill(&n.live, &outside);
    let point = n.points.join("1");
    n.backend.capture(&n.live, &point).unwrap();
    let root = root_of(&point);
    let work = n.points.join("next");
    let stats = n.backend.clone_tree(&point, &work).unwrap();
    assert_eq!(stats.method, method);
    assert_eq!(root_of(&work), root, "{kind}");
    mutate(&work);
    assert_ne!(root_of(&work), root);
    assert_eq!(
        root_of(&point),
        root,
        "{kind}: writing the clone changed its source"
    );
    let again = n.backend.clone_tree(&point, &work).unwrap();
    assert_eq!(root_of(&work), root, "{kind}");
    if method == CaptureMethod::Update {
        assert!(
            again.bytes_copied <= 2 * BLOCK_SIZE as u64 + 5000,
            "{again:?}"
        );
    }
}

#[test]
fn btrfs_clone_is_a_writable_snapshot() {
    clone_keeps_its_source(LoopFsKind::Btrfs, CaptureMethod::Snapshot);
}

#[test]
fn xfs_clone_is_a_reflink_copy() {
    clone_keeps_its_source(LoopFsKind::Xfs, CaptureMethod::Reflink);
}

#[test]
fn dir_clone_updates_the_other_buffer() {
    clone_keeps_its_source(LoopFsKind::Ext4, CaptureMethod::Update);
}

#[test]
fn btrfs_volume_made_as_a_plain_directory_is_captured_by_reflink() {
    let n = node(LoopFsKind::Btrfs);
    let old = n.backend.root().join("old").join("data");
    fs::create_dir_all(&old).unwrap();
    let outside = outside_file(&n);
    fill(&old, &outside);
    assert_eq!(
        n.backend.capture_method(&old).unwrap(),
        CaptureMethod::Reflink
    );
    assert!(CaptureMethod::Reflink.needs_pause());
    assert_eq!(
        n.backend.capture_method(&n.live).unwrap(),
        CaptureMethod::Snapshot
    );
    let point = n.points.join("old-1");
    let stats = n.backend.capture(&old, &point).unwrap();
    assert_eq!(stats.method, CaptureMethod::Reflink);
    assert!(
        stats.bytes_reflinked >= 3 * MIB && stats.bytes_copied == 0,
        "{stats:?}"
    );
    assert_eq!(stats.skipped, 1, "the fifo");
    assert_eq!(root_of(&point), root_of(&old));
    // A point that is no subvolume clones by reflink too.
    let work = n.points.join("old-next");
    assert_eq!(
        n.backend.clone_tree(&point, &work).unwrap().method,
        CaptureMethod::Reflink
    );
    assert_eq!(root_of(&work), root_of(&old));
}

/// The live tree filled, with links to a file and a directory outside it.
fn with_links_out(kind: LoopFsKind) -> (Node, Vec<PathBuf>) {
    let n = node(kind);
    let outside = outside_file(&n);
    fill(&n.live, &outside);
    let outside_dir = n.fs.path().join("outside-dir");
    fs::create_dir(&outside_dir).unwrap();
    write(&outside_dir.join("keep"), b"keep");
    std::os::unix::fs::symlink(&outside_dir, n.live.join("dir-link")).unwrap();
    (n, vec![outside, outside_dir.join("keep")])
}

fn still_there(outside: &[PathBuf]) {
    for path in outside {
        assert!(path.is_file(), "{} was removed", path.display());
    }
}

#[test]
fn btrfs_remove_tree_deletes_subvolumes_and_snapshots_and_follows_no_link() {
    let (n, outside) = with_links_out(LoopFsKind::Btrfs);
    // A subvolume the app made inside its volume, with data.
    let nested = n.live.join("nested");
    btrfs::create_subvolume(&nested).unwrap();
    write(&nested.join("f"), b"nested");
    let point = n.points.join("1");
    n.backend.capture(&n.live, &point).unwrap();
    // A plain directory holding a read-only snapshot (a copy set aside).
    let aside = n.backend.root().join("aside");
    fs::create_dir(&aside).unwrap();
    btrfs::snapshot(&n.live, &aside.join("snap"), true).unwrap();
    for path in [&point, &aside, &n.live] {
        n.backend.remove_tree(path).unwrap();
        assert!(
            fs::symlink_metadata(path).is_err(),
            "{} is still there",
            path.display()
        );
    }
    still_there(&outside);
    // Nothing there is no error.
    n.backend.remove_tree(&point).unwrap();
}

#[test]
fn dir_remove_tree_follows_no_link() {
    let (n, outside) = with_links_out(LoopFsKind::Ext4);
    n.backend.remove_tree(&n.live).unwrap();
    assert!(fs::symlink_metadata(&n.live).is_err());
    still_there(&outside);
}

/// A file whose size, mtime, mode and owner match and which was checked
/// well after its last change is not read again: so a point whose data a
/// crash lost would stay wrong, and the marker a crash leaves makes the
/// next capture read everything.
#[test]
fn dir_capture_after_an_interrupted_one_reads_every_file() {
    let n = node(LoopFsKind::Ext4);
    write(&n.live.join("f"), &pattern(9, 3 * BLOCK_SIZE));
    let point = n.points.join("1");
    // Beyond the racy window, so the next capture trusts this one's copy.
    std::thread::sleep(RACY_WINDOW_AND_A_TICK);
    n.backend.capture(&n.live, &point).unwrap();
    let good = root_of(&n.live);
    assert_eq!(root_of(&point), good);
    // What a crash could leave: the copy's mtime written, its data not.
    let copy = point.join("f");
    let mtime = fs::metadata(&copy).unwrap();
    write_at(&copy, BLOCK_SIZE as u64, &[0u8; 10]);
    copy::set_mtime(&copy, &mtime).unwrap();
    std::thread::sleep(RACY_WINDOW_AND_A_TICK);
    let trusted = n.backend.capture(&n.live, &point).unwrap();
    assert_eq!(trusted.bytes_copied, 0, "{trusted:?}");
    assert_ne!(
        root_of(&point),
        good,
        "the copy was read although it was trusted"
    );

    let marker = n.points.join(".1.updating");
    File::create(&marker).unwrap();
    let repaired = n.backend.capture(&n.live, &point).unwrap();
    assert_eq!(repaired.bytes_copied, BLOCK_SIZE as u64, "{repaired:?}");
    assert_eq!(root_of(&point), good);
    assert!(fs::symlink_metadata(&marker).is_err(), "the marker stayed");
    assert_eq!(
        fs::metadata(&copy).unwrap().mtime(),
        fs::metadata(n.live.join("f")).unwrap().mtime()
    );
}

const RACY_WINDOW_AND_A_TICK: Duration =
    Duration::from_millis(crate::volume::cache::RACY_WINDOW.as_millis() as u64 + 100);

#[test]
fn create_volume_dir_makes_a_private_subvolume_on_btrfs_and_keeps_an_existing_dir() {
    let n = node(LoopFsKind::Btrfs);
    let m = fs::symlink_metadata(&n.live).unwrap();
    assert!(btrfs::is_subvolume(&m));
    assert_eq!(m.mode() & 0o7777, 0o700);
    write(&n.live.join("f"), b"kept");
    n.backend.create_volume_dir(&n.live).unwrap();
    assert_eq!(fs::read(n.live.join("f")).unwrap(), b"kept");
    let e = n.backend.create_volume_dir(&n.live.join("f")).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    let d = node(LoopFsKind::Ext4);
    let m = fs::symlink_metadata(&d.live).unwrap();
    assert!(m.is_dir() && m.mode() & 0o7777 == 0o700);
}

/// The measurement: 3 rewritten 4 KiB blocks of a 64 MiB reflinked
/// file are one 3-block range; a copy that shares nothing is all changed.
fn three_rewritten_blocks(kind: LoopFsKind) {
    let fs = mounted(kind);
    let orig = fs.path().join("orig");
    write(&orig, &pattern(11, 64 * MIB as usize));
    let copy = fs.path().join("copy");
    {
        let o = File::open(&orig).unwrap();
        let c = File::create(&copy).unwrap();
        crate::volume::sys::reflink(&o, &c).unwrap();
    }
    let at = 10 * MIB + 3 * BLOCK_SIZE as u64;
    write_at(&copy, at, &pattern(12, 3 * BLOCK_SIZE));
    let (o, c) = (File::open(&orig).unwrap(), File::open(&copy).unwrap());
    let ranges = changed_ranges(&o, &c, &copy).unwrap();
    assert_eq!(ranges, vec![at..at + 3 * BLOCK_SIZE as u64], "{kind}");
    assert_eq!(changed_ranges(&o, &o, &orig).unwrap(), vec![], "{kind}");

    let plain = fs.path().join("plain");
    write(&plain, &fs::read(&orig).unwrap());
    let p = File::open(&plain).unwrap();
    assert_eq!(
        changed_ranges(&o, &p, &plain).unwrap(),
        vec![0..64 * MIB],
        "{kind}"
    );
    // Grown by a block: the new tail is changed too.
    OpenOptions::new()
        .append(true)
        .open(&copy)
        .unwrap()
        .write_all_at(&[1; 4096], 64 * MIB)
        .unwrap();
    let c = File::open(&copy).unwrap();
    let ranges = changed_ranges(&o, &c, &copy).unwrap();
    assert_eq!(
        ranges,
        vec![at..at + 3 * BLOCK_SIZE as u64, 64 * MIB..64 * MIB + 4096],
        "{kind}"
    );
}

#[test]
fn xfs_changed_ranges_are_the_rewritten_blocks() {
    three_rewritten_blocks(LoopFsKind::Xfs);
}

#[test]
fn btrfs_changed_ranges_are_the_rewritten_blocks() {
    three_rewritten_blocks(LoopFsKind::Btrfs);
}

/// A page written through a writable mapping can be written again without
/// any timestamp moving, unless it was written back (which write-protects
/// it): the dir capture does that before reading, so the second write moves
/// ctime and is captured, though the copy was checked long after the first.
#[test]
fn dir_capture_sees_a_second_write_through_the_same_mapping() {
    let n = node(LoopFsKind::Ext4);
    // A point to update: a first capture syncs the whole file system.
    let point = n.points.join("1");
    n.backend.capture(&n.live, &point).unwrap();
    let path = n.live.join("mapped");
    write(&path, &[0u8; BLOCK_SIZE]);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // SAFETY: a shared read-write mapping of one page of a file we hold open;
    // only this test touches it, and it is unmapped below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            BLOCK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED);
    let poke = |byte: u8| {
        // SAFETY: `page` maps BLOCK_SIZE writable bytes until munmap.
        unsafe { std::ptr::write_volatile(page.cast::<u8>().add(100), byte) }
    };
    poke(1);
    std::thread::sleep(RACY_WINDOW_AND_A_TICK);
    n.backend.capture(&n.live, &point).unwrap();
    assert_eq!(fs::read(point.join("mapped")).unwrap()[100], 1);
    std::thread::sleep(RACY_WINDOW_AND_A_TICK);
    poke(2);
    n.backend.capture(&n.live, &point).unwrap();
    // SAFETY: the mapping made above, unmapped once.
    assert_eq!(unsafe { libc::munmap(page, BLOCK_SIZE) }, 0);
    assert_eq!(fs::read(point.join("mapped")).unwrap()[100], 2);
    assert_eq!(root_of(&point), root_of(&n.live));
}

/// A dir point captured in the pause and made durable after the thaw is
/// untrusted in between: the marker stands until it settled, so a crash
/// before the fsyncs makes the next capture read every file.
#[test]
fn a_dir_point_is_trusted_only_once_settled() {
    let n = node(LoopFsKind::Ext4);
    write(&n.live.join("f"), &pattern(3, 2 * BLOCK_SIZE));
    let point = n.points.join("1");
    let marker = n.points.join(".1.updating");
    let (stats, settle) = n.backend.capture_unsettled(&n.live, &point).unwrap();
    assert_eq!(stats.method, CaptureMethod::Update);
    assert_eq!(
        root_of(&point),
        root_of(&n.live),
        "the data is the instant's"
    );
    assert!(
        fs::symlink_metadata(&marker).is_ok(),
        "untrusted until durable"
    );
    settle.settle().unwrap();
    assert!(
        fs::symlink_metadata(&marker).is_err(),
        "trusted once durable"
    );

    // Snapshots and reflink copies have nothing left to settle.
    let b = node(LoopFsKind::Btrfs);
    let (_, settle) = b
        .backend
        .capture_unsettled(&b.live, &b.points.join("1"))
        .unwrap();
    settle.settle().unwrap();
    assert!(fs::symlink_metadata(b.points.join(".1.updating")).is_err());
}

#[test]
fn a_dir_point_survives_a_power_cut() {
    // A lazyfs forgets what was not fsynced.
    let (_t, mount) = crate::durable::lazyfs_for_test();
    let mnt = mount.path().to_path_buf();
    let root = mnt.join("volumes");
    let points = root.join("db").join("points");
    crate::durable::create_dir_all(&points, 0o700).unwrap();
    let backend = Backend::select(&root, BackendChoice::Auto).unwrap();
    assert_eq!(backend.kind(), BackendKind::Dir);
    let live = root.join("db").join("data");
    backend.create_volume_dir(&live).unwrap();
    let outside = mnt.join("outside");
    write(&outside, b"not in the volume");
    fill(&live, &outside);
    let point = points.join("p");
    // A first point copies everything, made durable at once.
    backend.capture(&live, &point).unwrap();
    let want = root_of(&live);

    let mount = mount.power_cycle().unwrap();
    assert!(
        !point.with_file_name(".p.updating").exists(),
        "the point was whole"
    );
    assert_eq!(root_of(&point), want);
    mount.unmount().unwrap();
}
