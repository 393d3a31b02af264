//! The FUSE file system: a passthrough to `<backing>/root` that tells the
//! durability [`Model`] about every change before making it, keeps removed
//! inodes a cut may bring back in `<backing>/grave`, and on `cut` (written
//! to `<mount>/.lazyfs`) rebuilds the backing tree as only its durable
//! state ([`crate::restore`]) and fails every later operation with EIO.
//!
//! One mutex serialises every request: the cut is atomic with respect to
//! every operation (none is half on either side of it).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirEntryExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::model::{Entries, Model};
use crate::{restore, sys, CONTROL_NAME};

/// The control file's inode number (no backing inode is this high).
const CONTROL_INO: u64 = u64::MAX - 1;
/// The control file's handle.
const CONTROL_FH: u64 = u64::MAX;
/// No attribute or entry caching in the kernel: every stat reaches the
/// model, so nothing answers from a cache after a cut.
const TTL: Duration = Duration::ZERO;

struct Node {
    path_fd: OwnedFd,
    lookups: u64,
    /// The directory and name it was last looked up by: a symlink's times
    /// are set through them (no call sets them through an `O_PATH` handle).
    name: Option<(u64, OsString)>,
}

struct Handle {
    file: File,
    ino: u64,
    sync: bool,
    append: bool,
}

struct State {
    backing: PathBuf,
    root_ino: u64,
    grave: File,
    nodes: HashMap<u64, Node>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    model: Model,
    grave_names: HashMap<u64, Vec<OsString>>,
    next_grave: u64,
    max_dirty: u64,
    cut: bool,
}

/// The lazy file system over one backing directory.
pub struct LazyFs {
    state: Mutex<State>,
}

type Res<T> = Result<T, Errno>;

fn err(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl LazyFs {
    /// Serves `<backing>/root` (see [`crate::prepare_backing`]).
    pub fn new(backing: &Path, max_dirty: u64) -> io::Result<Self> {
        crate::prepare_backing(backing)?;
        let root = File::open(backing.join("root"))?;
        let grave = File::open(backing.join("grave"))?;
        let root_ino = sys::stat_fd(root.as_raw_fd())?.st_ino;
        let path_fd = sys::open_path(root.as_raw_fd(), OsStr::new("."))?;
        let nodes = HashMap::from([(
            root_ino,
            Node {
                path_fd,
                lookups: 1,
                name: None,
            },
        )]);
        Ok(LazyFs {
            state: Mutex::new(State {
                backing: backing.to_path_buf(),
                root_ino,
                grave,
                nodes,
                handles: HashMap::new(),
                next_fh: 1,
                model: Model::default(),
                grave_names: HashMap::new(),
                next_grave: 0,
                max_dirty,
                cut: false,
            }),
        })
    }

    /// Runs `f` on the state unless the file system was cut.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> Res<T>) -> Res<T> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.cut {
            return Err(Errno::EIO);
        }
        f(&mut s)
    }
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH
    }
}

fn control_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(CONTROL_INO),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0o600,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    let (tv_sec, tv_nsec) = match t {
        None => (0, libc::UTIME_OMIT),
        Some(TimeOrNow::Now) => (0, libc::UTIME_NOW),
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            (d.as_secs() as i64, i64::from(d.subsec_nanos()))
        }
    };
    libc::timespec { tv_sec, tv_nsec }
}

impl State {
    /// The FUSE inode number of a backing inode (the root is 1).
    fn fuse_ino(&self, st_ino: u64) -> u64 {
        if st_ino == self.root_ino {
            INodeNo::ROOT.0
        } else {
            st_ino
        }
    }

    fn backing_ino(&self, ino: INodeNo) -> u64 {
        if ino == INodeNo::ROOT {
            self.root_ino
        } else {
            ino.0
        }
    }

    fn fd(&self, st_ino: u64) -> Res<RawFd> {
        let node = self.nodes.get(&st_ino).ok_or(Errno::ESTALE)?;
        Ok(node.path_fd.as_raw_fd())
    }

    fn attr(&self, st: &libc::stat) -> FileAttr {
        FileAttr {
            ino: INodeNo(self.fuse_ino(st.st_ino)),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: kind_of(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Looks `name` up in `parent` and counts one kernel reference to it.
    fn lookup(&mut self, parent: u64, name: &OsStr) -> Res<FileAttr> {
        let pfd = self.fd(parent)?;
        let st = sys::stat_at(pfd, name).map_err(err)?;
        if st.st_ino == INodeNo::ROOT.0 || st.st_ino >= CONTROL_INO {
            return Err(Errno::EIO);
        }
        let named = Some((parent, name.to_os_string()));
        match self.nodes.get_mut(&st.st_ino) {
            Some(node) => {
                node.lookups += 1;
                node.name = named;
            }
            None => {
                let path_fd = sys::open_path(pfd, name).map_err(err)?;
                let node = Node {
                    path_fd,
                    lookups: 1,
                    name: named,
                };
                self.nodes.insert(st.st_ino, node);
            }
        }
        Ok(self.attr(&st))
    }

    /// The live entries of a directory (its durable ones, while clean).
    fn list(&self, dir: u64) -> io::Result<Entries> {
        let fd = self
            .fd(dir)
            .map_err(|e| io::Error::from_raw_os_error(e.code()))?;
        let mut out = Entries::new();
        for entry in std::fs::read_dir(sys::proc_path(fd))? {
            let entry = entry?;
            out.insert(entry.file_name(), entry.ino());
        }
        Ok(out)
    }

    fn before_dir_change(&mut self, dir: u64) -> Res<()> {
        let entries = self.list(dir).map_err(err)?;
        self.model
            .before_dir_change(dir, || Ok(entries))
            .map_err(err)
    }

    /// Saves the durable bytes `[off, off + len)` of `ino` would lose.
    fn before_data_change(&mut self, ino: u64, off: u64, len: u64) -> Res<()> {
        let fd = self.fd(ino)?;
        let size = sys::stat_fd(fd).map_err(err)?.st_size as u64;
        let mut reader: Option<File> = None;
        self.model
            .before_change(ino, size, off, len, |o, l| {
                if reader.is_none() {
                    reader = Some(File::open(sys::proc_path(fd))?);
                }
                sys::read_zero_filled(reader.as_ref().expect("opened above"), o, l)
            })
            .map_err(err)?;
        self.write_back_over_bound();
        Ok(())
    }

    /// Above `--max-dirty-mib` of saved bytes, the file holding the most
    /// is made durable, as the kernel's writeback would: memory stays
    /// bounded and no writer ever blocks.
    fn write_back_over_bound(&mut self) {
        while self.model.undo_bytes() > self.max_dirty {
            match self.model.largest_undo() {
                Some(ino) => self.model.synced_data(ino),
                None => break,
            }
        }
    }

    /// Removes `name` from `dir` in the live tree. An inode a record still
    /// names moves to the graveyard (a cut may bring it back); any other is
    /// deleted.
    fn remove(&mut self, dir: u64, name: &OsStr, is_dir: bool) -> Res<()> {
        let pfd = self.fd(dir)?;
        let st = sys::stat_at(pfd, name).map_err(err)?;
        if is_dir {
            let path = sys::proc_path(pfd).join(name);
            if std::fs::read_dir(path).map_err(err)?.next().is_some() {
                return Err(Errno::ENOTEMPTY);
            }
        }
        if self.model.referenced(st.st_ino) {
            let grave_name = OsString::from(format!("{}.{}", st.st_ino, self.next_grave));
            self.next_grave += 1;
            sys::rename_at(pfd, name, self.grave.as_raw_fd(), &grave_name, 0).map_err(err)?;
            self.grave_names
                .entry(st.st_ino)
                .or_default()
                .push(grave_name);
        } else {
            sys::unlink_at(pfd, name, is_dir).map_err(err)?;
            if is_dir || st.st_nlink <= 1 {
                let freed = self.model.gone(st.st_ino);
                self.bury(freed);
            }
        }
        Ok(())
    }

    /// Deletes from the graveyard the inodes no record names any more, and
    /// whatever only their own records named.
    fn bury(&mut self, mut freed: Vec<u64>) {
        while let Some(ino) = freed.pop() {
            let Some(names) = self.grave_names.remove(&ino) else {
                continue;
            };
            let grave = self.grave.as_raw_fd();
            for name in names {
                let Ok(st) = sys::stat_at(grave, &name) else {
                    continue;
                };
                let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                if sys::unlink_at(grave, &name, is_dir).is_ok() && (is_dir || st.st_nlink <= 1) {
                    freed.extend(self.model.gone(ino));
                }
            }
        }
    }

    fn created(&mut self, parent: u64, name: &OsStr, is_dir: bool) -> Res<FileAttr> {
        let attr = self.lookup(parent, name)?;
        let ino = self.backing_ino(attr.ino);
        if is_dir {
            let freed = self.model.created_dir(ino);
            self.bury(freed);
        } else {
            self.model.created_file(ino);
        }
        Ok(attr)
    }

    fn open(&mut self, ino: u64, flags: i32, trunc_done: bool) -> Res<u64> {
        let fd = self.fd(ino)?;
        if flags & libc::O_TRUNC != 0 && !trunc_done {
            self.before_data_change(ino, 0, u64::MAX)?;
        }
        // O_NOFOLLOW would refuse the /proc magic link itself.
        let passed = flags
            & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_SYNC | libc::O_NOFOLLOW);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(passed & !libc::O_ACCMODE)
            .write(flags & libc::O_ACCMODE != libc::O_RDONLY)
            .read(flags & libc::O_ACCMODE != libc::O_WRONLY)
            .open(sys::proc_path(fd))
            .map_err(err)?;
        let fh = self.next_fh;
        self.next_fh += 1;
        let handle = Handle {
            file,
            ino,
            sync: flags & libc::O_DSYNC != 0,
            append: flags & libc::O_APPEND != 0,
        };
        self.handles.insert(fh, handle);
        Ok(fh)
    }

    fn write(&mut self, fh: u64, offset: u64, data: &[u8]) -> Res<u32> {
        let h = self.handles.get(&fh).ok_or(Errno::EBADF)?;
        let (ino, sync) = (h.ino, h.sync);
        let off = if h.append {
            h.file.metadata().map_err(err)?.len()
        } else {
            offset
        };
        self.before_data_change(ino, off, data.len() as u64)?;
        let h = self.handles.get(&fh).ok_or(Errno::EBADF)?;
        h.file.write_all_at(data, off).map_err(err)?;
        if sync {
            self.model.synced_data(ino);
        }
        Ok(data.len() as u32)
    }

    fn set_size(&mut self, ino: u64, fh: Option<FileHandle>, size: u64) -> Res<()> {
        self.before_data_change(ino, size, u64::MAX)?;
        match fh.and_then(|fh| self.handles.get(&fh.0)) {
            Some(h) => h.file.set_len(size).map_err(err),
            None => {
                let fd = self.fd(ino)?;
                let f = OpenOptions::new()
                    .write(true)
                    .open(sys::proc_path(fd))
                    .map_err(err)?;
                f.set_len(size).map_err(err)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Res<FileAttr> {
        if let Some(size) = size {
            self.set_size(ino, fh, size)?;
        }
        let fd = self.fd(ino)?;
        if let Some(mode) = mode {
            let perms = std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777);
            std::fs::set_permissions(sys::proc_path(fd), perms).map_err(err)?;
        }
        if uid.is_some() || gid.is_some() {
            sys::chown_fd(fd, uid, gid).map_err(err)?;
        }
        if atime.is_some() || mtime.is_some() {
            let times = [timespec(atime), timespec(mtime)];
            let st = sys::stat_fd(fd).map_err(err)?;
            let named = self.nodes.get(&ino).and_then(|n| n.name.clone());
            match named {
                Some((dir, name)) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                    sys::utimens_at(self.fd(dir)?, &name, times, libc::AT_SYMLINK_NOFOLLOW)
                }
                _ => sys::utimens_at(libc::AT_FDCWD, sys::proc_path(fd).as_os_str(), times, 0),
            }
            .map_err(err)?;
        }
        Ok(self.attr(&sys::stat_fd(fd).map_err(err)?))
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Res<()> {
        self.before_dir_change(parent)?;
        self.before_dir_change(newparent)?;
        let (pfd, npfd) = (self.fd(parent)?, self.fd(newparent)?);
        let from = sys::stat_at(pfd, name).map_err(err)?;
        if flags & libc::RENAME_EXCHANGE == 0 {
            if let Ok(to) = sys::stat_at(npfd, newname) {
                if flags & libc::RENAME_NOREPLACE != 0 {
                    return Err(Errno::EEXIST);
                }
                if to.st_ino == from.st_ino {
                    return Ok(());
                }
                let (from_dir, to_dir) = (
                    from.st_mode & libc::S_IFMT == libc::S_IFDIR,
                    to.st_mode & libc::S_IFMT == libc::S_IFDIR,
                );
                match (from_dir, to_dir) {
                    (true, false) => return Err(Errno::ENOTDIR),
                    (false, true) => return Err(Errno::EISDIR),
                    _ => self.remove(newparent, newname, to_dir)?,
                }
            }
        }
        sys::rename_at(pfd, name, npfd, newname, flags).map_err(err)?;
        if let Some(node) = self.nodes.get_mut(&from.st_ino) {
            node.name = Some((newparent, newname.to_os_string()));
        }
        Ok(())
    }

    /// `.`, `..` and the live entries of a directory, in readdir order.
    fn dir_entries(&self, ino: u64) -> Res<Vec<(u64, FileType, OsString)>> {
        let fd = self.fd(ino)?;
        let mut entries = vec![
            (self.fuse_ino(ino), FileType::Directory, OsString::from(".")),
            (
                self.fuse_ino(ino),
                FileType::Directory,
                OsString::from(".."),
            ),
        ];
        for entry in std::fs::read_dir(sys::proc_path(fd)).map_err(err)? {
            let entry = entry.map_err(err)?;
            let mode = entry.file_type().map_err(err)?;
            let kind = FileType::from_std(mode).unwrap_or(FileType::RegularFile);
            entries.push((self.fuse_ino(entry.ino()), kind, entry.file_name()));
        }
        Ok(entries)
    }

    /// The power cut: the backing tree becomes its durable state, and
    /// every later operation fails.
    fn cut(&mut self) {
        self.cut = true;
        self.handles.clear();
        let grave = self.backing.join("grave");
        if let Err(e) = restore::rebuild(&self.backing, self.root_ino, &grave, &self.model) {
            eprintln!("flocker-lazyfs: rebuilding the durable state failed: {e}");
        }
        self.nodes.clear();
    }
}

/// Replies with the result of `f`, or its error.
macro_rules! answer {
    ($self:ident, $reply:ident, |$s:ident| $body:expr, $ok:expr) => {
        match $self.with(|$s| $body) {
            Ok(v) => $ok(v),
            Err(e) => $reply.error(e),
        }
    };
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == CONTROL_NAME {
            return match self.with(|_| Ok(())) {
                Ok(()) => reply.entry(&TTL, &control_attr(), Generation(0)),
                Err(e) => reply.error(e),
            };
        }
        answer!(
            self,
            reply,
            |s| {
                let p = s.backing_ino(parent);
                s.lookup(p, name)
            },
            |a| reply.entry(&TTL, &a, Generation(0))
        )
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _ = self.with(|s| {
            let st_ino = s.backing_ino(ino);
            if st_ino == s.root_ino {
                return Ok(());
            }
            let Some(node) = s.nodes.get_mut(&st_ino) else {
                return Ok(());
            };
            node.lookups = node.lookups.saturating_sub(nlookup);
            if node.lookups == 0 {
                let node = s.nodes.remove(&st_ino).expect("present above");
                let unlinked =
                    sys::stat_fd(node.path_fd.as_raw_fd()).is_ok_and(|st| st.st_nlink == 0);
                if unlinked && !s.model.referenced(st_ino) {
                    let freed = s.model.gone(st_ino);
                    s.bury(freed);
                }
            }
            Ok(())
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino.0 == CONTROL_INO {
            return reply.attr(&TTL, &control_attr());
        }
        answer!(
            self,
            reply,
            |s| {
                let fd = s.fd(s.backing_ino(ino))?;
                let st = sys::stat_fd(fd).map_err(err)?;
                Ok(s.attr(&st))
            },
            |a| reply.attr(&TTL, &a)
        )
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if ino.0 == CONTROL_INO {
            return reply.attr(&TTL, &control_attr());
        }
        answer!(
            self,
            reply,
            |s| {
                let i = s.backing_ino(ino);
                s.setattr(i, mode, uid, gid, size, atime, mtime, fh)
            },
            |a| reply.attr(&TTL, &a)
        )
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        answer!(
            self,
            reply,
            |s| sys::read_link(s.fd(s.backing_ino(ino))?).map_err(err),
            |d: Vec<u8>| reply.data(&d)
        )
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        answer!(
            self,
            reply,
            |s| {
                let p = s.backing_ino(parent);
                s.before_dir_change(p)?;
                sys::mknod_at(s.fd(p)?, name, mode & !umask, rdev).map_err(err)?;
                s.created(p, name, false)
            },
            |a| reply.entry(&TTL, &a, Generation(0))
        )
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        answer!(
            self,
            reply,
            |s| {
                let p = s.backing_ino(parent);
                s.before_dir_change(p)?;
                sys::mkdir_at(s.fd(p)?, name, mode & !umask).map_err(err)?;
                s.created(p, name, true)
            },
            |a| reply.entry(&TTL, &a, Generation(0))
        )
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer!(
            self,
            reply,
            |s| {
                let p = s.backing_ino(parent);
                s.before_dir_change(p)?;
                s.remove(p, name, false)
            },
            |()| reply.ok()
        )
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer!(
            self,
            reply,
            |s| {
                let p = s.backing_ino(parent);
                s.before_dir_change(p)?;
                s.remove(p, name, true)
            },
            |()| reply.ok()
        )
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        answer!(
            self,
            reply,
            |s| {
                let p = s.backing_ino(parent);
                s.before_dir_change(p)?;
                sys::symlink_at(target.as_os_str(), s.fd(p)?, link_name).map_err(err)?;
                s.lookup(p, link_name)
            },
            |a| reply.entry(&TTL, &a, Generation(0))
        )
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        answer!(
            self,
            reply,
            |s| {
                let (p, np) = (s.backing_ino(parent), s.backing_ino(newparent));
                s.rename(p, name, np, newname, flags.bits())
            },
            |()| reply.ok()
        )
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        answer!(
            self,
            reply,
            |s| {
                let np = s.backing_ino(newparent);
                s.before_dir_change(np)?;
                let fd = s.fd(s.backing_ino(ino))?;
                sys::link_fd(fd, s.fd(np)?, newname).map_err(err)?;
                s.lookup(np, newname)
            },
            |a| reply.entry(&TTL, &a, Generation(0))
        )
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 == CONTROL_INO {
            return reply.opened(FileHandle(CONTROL_FH), FopenFlags::FOPEN_DIRECT_IO);
        }
        answer!(
            self,
            reply,
            |s| {
                let i = s.backing_ino(ino);
                s.open(i, flags.0, false)
            },
            |fh| reply.opened(FileHandle(fh), FopenFlags::empty())
        )
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        answer!(
            self,
            reply,
            |s| {
                let h = s.handles.get(&fh.0).ok_or(Errno::EBADF)?;
                let mut buf = vec![0u8; size as usize];
                let mut done = 0;
                while done < buf.len() {
                    match h.file.read_at(&mut buf[done..], offset + done as u64) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(err(e)),
                    }
                }
                buf.truncate(done);
                Ok(buf)
            },
            |d: Vec<u8>| reply.data(&d)
        )
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if fh.0 == CONTROL_FH {
            return answer!(
                self,
                reply,
                |s| {
                    if data.trim_ascii() != b"cut" {
                        return Err(Errno::EINVAL);
                    }
                    s.cut();
                    Ok(data.len() as u32)
                },
                |n| reply.written(n)
            );
        }
        answer!(self, reply, |s| s.write(fh.0, offset, data), |n| reply
            .written(n))
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, ds: bool, reply: ReplyEmpty) {
        answer!(
            self,
            reply,
            |s| {
                let i = s.backing_ino(ino);
                // Passed on, so a commit costs what the disk under it
                // costs (the faults keep their real timing).
                if let Some(h) = s.handles.get(&fh.0) {
                    let synced = if ds {
                        h.file.sync_data()
                    } else {
                        h.file.sync_all()
                    };
                    synced.map_err(err)?;
                }
                s.model.synced_data(i);
                Ok(())
            },
            |()| reply.ok()
        )
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        answer!(self, reply, |_s| Ok(()), |()| reply
            .opened(FileHandle(0), FopenFlags::empty()))
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.with(|s| {
            let i = s.backing_ino(ino);
            s.dir_entries(i)
        });
        match listed {
            Ok(entries) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                for (i, (e_ino, kind, name)) in entries.into_iter().enumerate().skip(start) {
                    if reply.add(INodeNo(e_ino), (i + 1) as u64, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _ds: bool,
        reply: ReplyEmpty,
    ) {
        answer!(
            self,
            reply,
            |s| {
                let i = s.backing_ino(ino);
                File::open(sys::proc_path(s.fd(i)?))
                    .and_then(|d| d.sync_all())
                    .map_err(err)?;
                let freed = s.model.synced_dir(i);
                s.bury(freed);
                Ok(())
            },
            |()| reply.ok()
        )
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        answer!(
            self,
            reply,
            |s| sys::statvfs(s.fd(s.root_ino)?).map_err(err),
            |v: libc::statvfs| reply.statfs(
                v.f_blocks,
                v.f_bfree,
                v.f_bavail,
                v.f_files,
                v.f_ffree,
                v.f_bsize as u32,
                v.f_namemax as u32,
                v.f_frsize as u32
            )
        )
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        answer!(
            self,
            reply,
            |s| {
                let p = s.backing_ino(parent);
                let pfd = s.fd(p)?;
                let existed = sys::stat_at(pfd, name).is_ok();
                if existed && flags & libc::O_EXCL != 0 {
                    return Err(Errno::EEXIST);
                }
                if !existed {
                    s.before_dir_change(p)?;
                    let c = sys::cstr(name).map_err(err)?;
                    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC;
                    // SAFETY: a NUL-terminated name; the descriptor is closed at once.
                    let fd = unsafe { libc::openat(pfd, c.as_ptr(), flags, mode & !umask) };
                    if fd < 0 {
                        return Err(err(io::Error::last_os_error()));
                    }
                    // SAFETY: just opened, ours.
                    unsafe { libc::close(fd) };
                }
                let attr = if existed {
                    s.lookup(p, name)?
                } else {
                    s.created(p, name, false)?
                };
                let fh = s.open(s.backing_ino(attr.ino), flags, !existed)?;
                Ok((attr, fh))
            },
            |(a, fh)| reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty())
        )
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        answer!(
            self,
            reply,
            |s| {
                let ino = s.handles.get(&fh.0).ok_or(Errno::EBADF)?.ino;
                let changes_bytes = libc::FALLOC_FL_PUNCH_HOLE
                    | libc::FALLOC_FL_ZERO_RANGE
                    | libc::FALLOC_FL_COLLAPSE_RANGE
                    | libc::FALLOC_FL_INSERT_RANGE;
                let len = if mode & (libc::FALLOC_FL_COLLAPSE_RANGE | libc::FALLOC_FL_INSERT_RANGE)
                    != 0
                {
                    u64::MAX
                } else if mode & changes_bytes != 0 {
                    length
                } else {
                    0
                };
                s.before_data_change(ino, offset, len)?;
                let h = s.handles.get(&fh.0).ok_or(Errno::EBADF)?;
                sys::fallocate(&h.file, mode, offset, length).map_err(err)
            },
            |()| reply.ok()
        )
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        answer!(
            self,
            reply,
            |s| {
                let h = s.handles.get(&fh.0).ok_or(Errno::EBADF)?;
                sys::lseek(&h.file, offset, whence).map_err(err)
            },
            |o| reply.offset(o)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn the_control_file_is_beyond_any_backing_inode() {
        assert!(CONTROL_INO > u64::from(u32::MAX) << 16);
        assert_eq!(kind_of(libc::S_IFDIR | 0o755), FileType::Directory);
        assert_eq!(OsStr::new(CONTROL_NAME).as_bytes(), b".lazyfs");
    }
}
