//! Which byte ranges of a file differ from an earlier reflink copy of it,
//! found without reading data: both files' extent maps (`FS_IOC_FIEMAP`)
//! are compared by **physical** address. A range both files map to the same
//! disk blocks at the same offset holds the same bytes; anything else (a
//! rewritten block got new blocks by copy-on-write, a hole on one side
//! only, an extent the kernel cannot place exactly) counts as changed.
//! The `SHARED` flag is not used: it says a block has another owner
//! somewhere, not that the owner is the other file at this offset (plain
//! `copy_file_range` copies set it too). Meaningful on XFS with reflink and
//! on btrfs, for two files on one file system that nobody writes meanwhile;
//! on any other pair it still never calls a changed range unchanged.

use super::super::error::{IoContext, Result, VolumeError};
use std::fs::File;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `struct fiemap` (linux/fiemap.h) without its trailing extent array.
#[repr(C)]
#[derive(Default)]
struct FiemapHeader {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
}

/// `struct fiemap_extent`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

/// Extents asked for per ioctl: 14 KiB of buffer, however fragmented the file.
const BATCH: usize = 256;

#[repr(C)]
struct FiemapRequest {
    header: FiemapHeader,
    extents: [FiemapExtent; BATCH],
}

const _: () = assert!(std::mem::size_of::<FiemapHeader>() == 32);
const _: () = assert!(std::mem::size_of::<FiemapExtent>() == 56);

const FS_IOC_FIEMAP: libc::Ioctl = libc::_IOWR::<FiemapHeader>(b'f' as u32, 11);
/// Write dirty pages back first, so delayed allocations have addresses.
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const EXTENT_LAST: u32 = 0x1;
/// Flags under which `physical` does not name this range's own blocks
/// exactly: UNKNOWN, DELALLOC, ENCODED, DATA_ENCRYPTED, NOT_ALIGNED,
/// DATA_INLINE, DATA_TAIL.
const EXTENT_INEXACT: u32 = 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400;

#[derive(Clone, Copy, Debug)]
struct Extent {
    logical: u64,
    physical: u64,
    length: u64,
    exact: bool,
}

impl Extent {
    fn end(&self) -> u64 {
        self.logical.saturating_add(self.length)
    }
}

/// The ranges of `new` (within its size) whose bytes may differ from
/// `old`'s, merged, ascending. `old` and `new` must be on one file system;
/// `path` names `new` in errors.
pub fn changed_ranges(old: &File, new: &File, path: &Path) -> Result<Vec<Range<u64>>> {
    let (om, nm) = (
        old.metadata().ctx("stat", path)?,
        new.metadata().ctx("stat", path)?,
    );
    if om.dev() != nm.dev() {
        return Err(VolumeError::Invalid(format!(
            "{}: extents compare only within one file system",
            path.display()
        )));
    }
    let (a, b) = (extents(old, path)?, extents(new, path)?);
    let size = nm.len();
    // Every offset where either mapping may start or stop being the same.
    let mut cuts: Vec<u64> = vec![0, size, om.len().min(size)];
    for e in a.iter().chain(&b) {
        cuts.extend([e.logical.min(size), e.end().min(size)]);
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<Range<u64>> = Vec::new();
    for w in cuts.windows(2) {
        let (x, y) = (w[0], w[1]);
        let same = x < om.len() && same_at(covering(&a, x), covering(&b, x), x);
        if same {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.end == x => last.end = y,
            _ => out.push(x..y),
        }
    }
    Ok(out)
}

/// Whether two mappings of offset `x` name the same bytes.
fn same_at(a: Option<&Extent>, b: Option<&Extent>, x: u64) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            let at = |e: &Extent| e.physical.checked_add(x - e.logical);
            a.exact && b.exact && at(a).is_some() && at(a) == at(b)
        }
        _ => false,
    }
}

/// The extent holding offset `x` (the list is sorted and disjoint).
fn covering(list: &[Extent], x: u64) -> Option<&Extent> {
    let i = list.partition_point(|e| e.end() <= x);
    list.get(i).filter(|e| e.logical <= x)
}

/// The whole extent map of `file`, in `BATCH`-sized ioctls.
fn extents(file: &File, path: &Path) -> Result<Vec<Extent>> {
    let mut out = Vec::new();
    let mut start = 0u64;
    loop {
        let mut req = FiemapRequest {
            header: FiemapHeader {
                start,
                length: u64::MAX - start,
                flags: FIEMAP_FLAG_SYNC,
                extent_count: BATCH as u32,
                ..FiemapHeader::default()
            },
            extents: [FiemapExtent::default(); BATCH],
        };
        // SAFETY: FS_IOC_FIEMAP reads the header and writes at most
        // `extent_count` extents into the array that follows it, all inside
        // `req`, which outlives the call.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut req) };
        if r != 0 {
            return Err(std::io::Error::last_os_error()).ctx("map extents of", path);
        }
        let got = (req.header.mapped_extents as usize).min(BATCH);
        for e in &req.extents[..got] {
            out.push(Extent {
                logical: e.logical,
                physical: e.physical,
                length: e.length,
                exact: e.flags & EXTENT_INEXACT == 0,
            });
        }
        let last = req.extents[..got].last();
        match last {
            Some(e) if e.flags & EXTENT_LAST == 0 && e.logical + e.length > start => {
                start = e.logical + e.length;
            }
            _ => return Ok(out),
        }
    }
}
