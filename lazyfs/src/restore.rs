//! The cut's rebuild: a new tree made of only what the durable state holds,
//! which then replaces the live one. Directories are made anew (their
//! durable entries: the model's record, or their live entries when clean);
//! every other inode is hard-linked in from wherever it is now (the live
//! tree or the graveyard), and a file with a data record gets its durable
//! size and its saved bytes back.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::model::{DataRecord, Entries, Model};

/// Replaces `<backing>/root` with its durable state.
pub fn rebuild(backing: &Path, root_ino: u64, grave: &Path, model: &Model) -> io::Result<()> {
    let root = backing.join("root");
    let next = backing.join("next");
    let mut at = HashMap::new();
    index(&root, &mut at)?;
    index(grave, &mut at)?;
    if next.exists() {
        fs::remove_dir_all(&next)?;
    }
    make_dir(&root, &next)?;
    // (source, rebuilt) directories, their times set once they are filled.
    let mut made = vec![(root.clone(), next.clone())];
    let mut dirs_done = HashSet::from([root_ino]);
    let mut files_done = HashSet::new();
    let mut todo = vec![(root_ino, next.clone())];
    while let Some((dir, dest)) = todo.pop() {
        let entries = match model.durable_entries(dir) {
            Some(e) => e.clone(),
            None => live_entries(&at[&dir])?,
        };
        for (name, ino) in entries {
            // Every inode a record names is kept in the live tree or the
            // graveyard; one missing would be a lazyfs bug, not data.
            let Some(src) = at.get(&ino) else {
                eprintln!("flocker-lazyfs: inode {ino} of {name:?} is gone; skipped");
                continue;
            };
            let to = dest.join(&name);
            if fs::symlink_metadata(src)?.is_dir() {
                if dirs_done.insert(ino) {
                    make_dir(src, &to)?;
                    made.push((src.clone(), to.clone()));
                    todo.push((ino, to));
                }
                continue;
            }
            fs::hard_link(src, &to)?;
            if files_done.insert(ino) {
                if let Some(rec) = model.data(ino) {
                    restore_data(&to, rec)?;
                }
            }
        }
    }
    for (src, to) in made.iter().rev() {
        copy_times(src, to)?;
    }
    let old = backing.join("old");
    fs::rename(&root, &old)?;
    fs::rename(&next, &root)?;
    fs::remove_dir_all(&old)?;
    fs::remove_dir_all(grave)?;
    fs::create_dir(grave)
}

/// Where each inode under `top` is found (one path per inode).
fn index(top: &Path, at: &mut HashMap<u64, PathBuf>) -> io::Result<()> {
    let mut todo = vec![top.to_path_buf()];
    at.entry(fs::symlink_metadata(top)?.ino())
        .or_insert_with(|| top.to_path_buf());
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let md = entry.metadata()?;
            at.entry(md.ino()).or_insert_with(|| entry.path());
            if md.is_dir() {
                todo.push(entry.path());
            }
        }
    }
    Ok(())
}

fn live_entries(dir: &Path) -> io::Result<Entries> {
    let mut out = Entries::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        out.insert(entry.file_name(), entry.metadata()?.ino());
    }
    Ok(out)
}

/// A new directory with `like`'s mode and owner (metadata other than
/// entries and data counts as durable at once).
fn make_dir(like: &Path, to: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(like)?;
    fs::create_dir(to)?;
    fs::set_permissions(to, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    std::os::unix::fs::chown(to, Some(md.uid()), Some(md.gid()))
}

/// `like`'s access and modification times on `to` (no symlink here).
fn copy_times(like: &Path, to: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(like)?;
    let times = [
        libc::timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec(),
        },
        libc::timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec(),
        },
    ];
    let c = crate::sys::cstr(to.as_os_str())?;
    // SAFETY: a NUL-terminated path and times that outlive the call.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn restore_data(path: &Path, rec: &DataRecord) -> io::Result<()> {
    let f = fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(rec.durable_size)?;
    for (off, bytes) in &rec.undo {
        f.write_all_at(bytes, *off)?;
    }
    Ok(())
}
