//! What a power cut would keep, as records beside the live tree: the live
//! tree (the backing directory) always holds the newest state, and this
//! model holds what differs in the durable one. An inode or directory with
//! no record is clean: its durable state is its live state.
//!
//! - A file's data record is its durable size and the durable bytes that
//!   live writes, truncates or punched holes have overwritten since its last
//!   fsync (an undo log). Appends past the durable size cost nothing: the
//!   cut truncates them away. fsync/fdatasync or an O_SYNC write drops the
//!   record.
//! - A directory's record is its durable entries (name → inode), taken
//!   just before its first change after its last fsync. fsync of the
//!   directory drops the record. A new directory's record is empty; a new
//!   file's data record has durable size 0.
//! - `refs` counts the records naming each inode, so an inode removed from
//!   the live tree is kept (in the graveyard) exactly while a record may
//!   still bring it back.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;

/// The durable state of one file that differs from its live state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRecord {
    /// The file's size in the durable state.
    pub durable_size: u64,
    /// Durable bytes overwritten in the live file since the last sync, by
    /// offset; the ranges are disjoint and lie below `durable_size`.
    pub undo: BTreeMap<u64, Vec<u8>>,
}

/// Durable entries of one directory: name → inode.
pub type Entries = BTreeMap<OsString, u64>;

/// The durability model of a whole mount (see the module doc).
#[derive(Debug, Default)]
pub struct Model {
    data: HashMap<u64, DataRecord>,
    dirs: HashMap<u64, Entries>,
    refs: HashMap<u64, u32>,
    undo_bytes: u64,
}

impl Model {
    /// Saves the durable bytes of `[off, off + len)` of `ino` that are not
    /// saved yet, before the live file changes there. `live_size` is the
    /// file's size now (the durable size of a clean file); `read(off, len)`
    /// reads live bytes, zero-filled past the end of the file.
    pub fn before_change(
        &mut self,
        ino: u64,
        live_size: u64,
        off: u64,
        len: u64,
        mut read: impl FnMut(u64, usize) -> io::Result<Vec<u8>>,
    ) -> io::Result<()> {
        let rec = self.data.entry(ino).or_insert_with(|| DataRecord {
            durable_size: live_size,
            undo: BTreeMap::new(),
        });
        let end = off.saturating_add(len).min(rec.durable_size);
        for (start, stop) in gaps(&rec.undo, off, end) {
            let bytes = read(start, (stop - start) as usize)?;
            self.undo_bytes += bytes.len() as u64;
            rec.undo.insert(start, bytes);
        }
        Ok(())
    }

    /// A new, empty file: durable with size 0 wherever its entry is durable.
    pub fn created_file(&mut self, ino: u64) {
        self.drop_data(ino);
        self.data.insert(
            ino,
            DataRecord {
                durable_size: 0,
                undo: BTreeMap::new(),
            },
        );
    }

    /// fsync, fdatasync, an O_SYNC write or a writeback: the live data is
    /// the durable data.
    pub fn synced_data(&mut self, ino: u64) {
        self.drop_data(ino);
    }

    /// The durable data of `ino` where it differs from the live data.
    pub fn data(&self, ino: u64) -> Option<&DataRecord> {
        self.data.get(&ino)
    }

    /// Bytes held in undo logs (the memory `--max-dirty-mib` bounds).
    pub fn undo_bytes(&self) -> u64 {
        self.undo_bytes
    }

    /// The file holding the most undo bytes: the one a writeback makes
    /// durable when the bound is reached.
    pub fn largest_undo(&self) -> Option<u64> {
        self.data
            .iter()
            .filter(|(_, r)| !r.undo.is_empty())
            .max_by_key(|(_, r)| r.undo.values().map(Vec::len).sum::<usize>())
            .map(|(ino, _)| *ino)
    }

    /// Takes `dir`'s durable entries (`list()`, its live entries now) before
    /// its first change since it was last synced.
    pub fn before_dir_change(
        &mut self,
        dir: u64,
        list: impl FnOnce() -> io::Result<Entries>,
    ) -> io::Result<()> {
        if self.dirs.contains_key(&dir) {
            return Ok(());
        }
        let entries = list()?;
        for ino in entries.values() {
            *self.refs.entry(*ino).or_default() += 1;
        }
        self.dirs.insert(dir, entries);
        Ok(())
    }

    /// A new directory: durable and empty wherever its entry is durable.
    /// Returns the inodes no record names any more.
    pub fn created_dir(&mut self, dir: u64) -> Vec<u64> {
        let freed = self.drop_dir(dir);
        self.dirs.insert(dir, Entries::new());
        freed
    }

    /// fsync of a directory: its live entries are its durable ones. Returns
    /// the inodes no record names any more (the graveyard may let them go).
    pub fn synced_dir(&mut self, dir: u64) -> Vec<u64> {
        self.drop_dir(dir)
    }

    /// `dir`'s durable entries where they differ from its live ones.
    pub fn durable_entries(&self, dir: u64) -> Option<&Entries> {
        self.dirs.get(&dir)
    }

    /// Whether a record names `ino` (so removing it from the live tree must
    /// keep it for a cut).
    pub fn referenced(&self, ino: u64) -> bool {
        self.refs.get(&ino).is_some_and(|n| *n > 0)
    }

    /// An inode that is gone for good (no link, no record): its own records
    /// go too, so a later inode reusing its number starts clean. Returns
    /// the inodes no record names any more.
    pub fn gone(&mut self, ino: u64) -> Vec<u64> {
        self.drop_data(ino);
        self.drop_dir(ino)
    }

    fn drop_data(&mut self, ino: u64) {
        if let Some(rec) = self.data.remove(&ino) {
            let held: usize = rec.undo.values().map(Vec::len).sum();
            self.undo_bytes -= held as u64;
        }
    }

    fn drop_dir(&mut self, dir: u64) -> Vec<u64> {
        let mut freed = Vec::new();
        for ino in self
            .dirs
            .remove(&dir)
            .into_iter()
            .flat_map(|e| e.into_values())
        {
            if let Some(n) = self.refs.get_mut(&ino) {
                *n -= 1;
                if *n == 0 {
                    self.refs.remove(&ino);
                    freed.push(ino);
                }
            }
        }
        freed
    }
}

/// The parts of `[start, end)` no range of `undo` covers.
fn gaps(undo: &BTreeMap<u64, Vec<u8>>, start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if start >= end {
        return out;
    }
    let mut at = start;
    // The range starting at or before `start` may reach into it.
    let first = undo.range(..=start).next_back();
    for (&s, bytes) in first.into_iter().chain(undo.range(start + 1..end)) {
        let e = s + bytes.len() as u64;
        if e <= at {
            continue;
        }
        if s > at {
            out.push((at, s.min(end)));
        }
        at = at.max(e);
        if at >= end {
            break;
        }
    }
    if at < end {
        out.push((at, end));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(bytes: &[u8]) -> impl FnMut(u64, usize) -> io::Result<Vec<u8>> + '_ {
        move |off, len| {
            let mut v = vec![0; len];
            for (i, b) in v.iter_mut().enumerate() {
                *b = bytes.get(off as usize + i).copied().unwrap_or(0);
            }
            Ok(v)
        }
    }

    #[test]
    fn gaps_skip_saved_ranges() {
        let mut undo = BTreeMap::new();
        undo.insert(2, vec![0; 3]); // [2,5)
        undo.insert(8, vec![0; 2]); // [8,10)
        assert_eq!(gaps(&undo, 0, 12), vec![(0, 2), (5, 8), (10, 12)]);
        assert_eq!(gaps(&undo, 3, 9), vec![(5, 8)]);
        assert_eq!(gaps(&undo, 2, 5), vec![]);
        assert_eq!(gaps(&undo, 4, 4), vec![]);
    }

    #[test]
    fn the_first_overwrite_of_a_byte_saves_it_once() {
        let mut m = Model::default();
        let old = b"abcdefgh".to_vec();
        m.before_change(7, 8, 2, 3, live(&old)).unwrap();
        // Live bytes changed now; a second overwrite must not save them.
        let newer = b"abXYZfgh".to_vec();
        m.before_change(7, 8, 0, 6, live(&newer)).unwrap();
        let rec = m.data(7).unwrap();
        assert_eq!(rec.durable_size, 8);
        let saved: Vec<_> = rec.undo.iter().map(|(o, b)| (*o, b.clone())).collect();
        assert_eq!(
            saved,
            vec![
                (0, b"ab".to_vec()),
                (2, b"cde".to_vec()),
                (5, b"f".to_vec())
            ]
        );
        assert_eq!(m.undo_bytes(), 6);
        m.synced_data(7);
        assert!(m.data(7).is_none());
        assert_eq!(m.undo_bytes(), 0);
    }

    #[test]
    fn appends_past_the_durable_size_save_nothing() {
        let mut m = Model::default();
        m.before_change(3, 4, 4, 100, live(b"abcd")).unwrap();
        assert_eq!(m.data(3).unwrap().durable_size, 4);
        assert!(m.data(3).unwrap().undo.is_empty());
        m.created_file(9);
        m.before_change(9, 0, 0, 10, live(b"")).unwrap();
        assert_eq!(m.data(9).unwrap().durable_size, 0);
    }

    #[test]
    fn a_directory_keeps_its_entries_until_synced() {
        let mut m = Model::default();
        let listed = || Ok(Entries::from([("a".into(), 10), ("b".into(), 11)]));
        m.before_dir_change(1, listed).unwrap();
        // Later changes keep the first snapshot.
        m.before_dir_change(1, || Ok(Entries::new())).unwrap();
        assert_eq!(m.durable_entries(1).unwrap().len(), 2);
        assert!(m.referenced(10));
        let mut freed = m.synced_dir(1);
        freed.sort();
        assert_eq!(freed, vec![10, 11]);
        assert!(!m.referenced(10));
        assert!(m.durable_entries(1).is_none());
    }

    #[test]
    fn an_inode_named_by_two_records_is_freed_by_the_second_sync() {
        let mut m = Model::default();
        m.before_dir_change(1, || Ok(Entries::from([("x".into(), 5)])))
            .unwrap();
        m.before_dir_change(2, || Ok(Entries::from([("y".into(), 5)])))
            .unwrap();
        assert!(m.synced_dir(1).is_empty());
        assert_eq!(m.synced_dir(2), vec![5]);
        assert!(m.created_dir(4).is_empty());
        assert!(m.durable_entries(4).unwrap().is_empty());
    }
}
