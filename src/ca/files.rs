//! Reading certificate files, and writing certificate and key files: never
//! over an existing file by accident, keys created with mode 0600 from the first byte, replacements
//! made atomically (a reader sees the old file or the new one, never half).

use anyhow::{Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The certificate in PEM file `path`.
pub fn load_cert(path: &Path) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_file(path)
        .with_context(|| format!("reading certificate {}", path.display()))
}

/// Creates `path` with `contents` and `mode`; fails if it exists.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A file written under a temporary name beside its destination, to be put
/// in place with [`Staged::commit`]; removed if dropped uncommitted.
pub struct Staged {
    temp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl Staged {
    pub fn write(dest: &Path, contents: &[u8], mode: u32) -> Result<Staged> {
        let name = dest
            .file_name()
            .with_context(|| format!("{} has no file name", dest.display()))?;
        let temp = dest.with_file_name(format!(
            ".{}.new-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        // A stale temp file of an earlier crashed run with our pid: ours to remove.
        let _ = fs::remove_file(&temp);
        write_new(&temp, contents, mode)?;
        Ok(Staged {
            temp,
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    /// Renames the temporary file over the destination.
    pub fn commit(mut self) -> Result<()> {
        fs::rename(&self.temp, &self.dest).with_context(|| {
            format!(
                "renaming {} to {}",
                self.temp.display(),
                self.dest.display()
            )
        })?;
        self.committed = true;
        if let Some(dir) = self.dest.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Makes renames and new files in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}
