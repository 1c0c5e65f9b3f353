//! Folder entries of new content files, made durable when something needs
//! them to be rather than at every create.
//!
//! A create used to sync its content file's folder before the catalog row
//! was written (a row must never point at a file a crash could lose). That
//! is a file-system journal commit per create, the larger part of a create's
//! cost. Now a folder that gained a content file is remembered here, and
//! synced when:
//! - a file in it is made durable (COMMIT, stable WRITEs): data on disk is
//!   no use under a name a crash could lose;
//! - the catalog lets its journal start over (`Catalog::before_durable`):
//!   from then on no journal record recreates the file after a crash.
//!
//! Until then, the catalog's journal holds the create, and its replay
//! creates a lost content file again, empty, as the create left it.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// Folders holding content files whose entries may not be on disk yet.
/// Bounded by the number of content folders (256 under the storage root).
#[derive(Debug, Default)]
pub struct NewEntries {
    dirs: Mutex<HashSet<PathBuf>>,
}

impl NewEntries {
    /// Creates a new, empty content file (failing if it exists), leaving
    /// its folder entry to be synced later.
    pub fn create_content(&self, path: &Path) -> io::Result<File> {
        let dir = path.parent().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "content path has no folder")
        })?;
        let f = match create_new(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                // The new folder's own entry in its parent, once.
                if let Some(parent) = dir.parent() {
                    File::open(parent)?.sync_all()?;
                }
                create_new(path)?
            }
            r => r?,
        };
        let mut dirs = self.dirs.lock();
        if !dirs.contains(dir) {
            dirs.insert(dir.to_path_buf());
        }
        Ok(f)
    }

    /// Makes the entries in `dir` durable if it has new ones.
    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // Taken out before the sync: an entry made meanwhile puts the
        // folder back, and the sync covers every entry made before it.
        if !self.dirs.lock().remove(dir) {
            return Ok(());
        }
        sync_folder(dir).inspect_err(|_| {
            self.dirs.lock().insert(dir.to_path_buf());
        })
    }

    /// Makes every new entry durable.
    pub fn sync_all(&self) -> io::Result<()> {
        let dirs: Vec<PathBuf> = self.dirs.lock().drain().collect();
        let mut first_error = None;
        for d in dirs {
            if let Err(e) = sync_folder(&d) {
                tracing::error!(dir = %d.display(), error = %e, "cannot sync a content folder");
                self.dirs.lock().insert(d);
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Folders with entries not yet synced.
    pub fn pending(&self) -> usize {
        self.dirs.lock().len()
    }
}

fn create_new(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
}

fn sync_folder(dir: &Path) -> io::Result<()> {
    match File::open(dir) {
        Ok(f) => f.sync_all(),
        // Removed since (its files with it): nothing to make durable.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_synced_once_per_new_entry_and_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let entries = NewEntries::default();
        let a = dir.path().join("ab").join("one");
        entries.create_content(&a).unwrap();
        entries
            .create_content(&dir.path().join("ab").join("two"))
            .unwrap();
        entries
            .create_content(&dir.path().join("cd").join("three"))
            .unwrap();
        assert_eq!(entries.pending(), 2, "two folders with new entries");
        assert!(
            entries.create_content(&a).is_err(),
            "never over an existing file"
        );
        entries.sync_dir(&dir.path().join("ab")).unwrap();
        assert_eq!(entries.pending(), 1);
        entries.sync_dir(&dir.path().join("ab")).unwrap();
        assert_eq!(entries.pending(), 1, "nothing new in ab");
        entries.sync_all().unwrap();
        assert_eq!(entries.pending(), 0);
    }
}
