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
//!
//! Creating a file costs the file system an inode, and finding a free one
//! can take long (on ext4 without a journal, 0.3–1 ms on a disk where many
//! files were recently removed). With spares on (Linux), a thread keeps a
//! few empty files ready in a hidden folder of the storage root, and a
//! create renames one into place (refusing to replace anything), so the
//! reply does not wait for the inode search.
//!
//! A removed content file of modest size is recycled rather than unlinked:
//! renamed into the spare folder, emptied there by the spare thread
//! (`ftruncate` to 0, so nothing of it can be read again) and handed to a
//! later create. Removing and creating then cost two renames, and the file
//! system allocates and frees no inode for them.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// The hidden folder of the storage root that holds spare files.
pub const SPARE_FOLDER: &str = ".markbase-spare";

/// Folders holding content files whose entries may not be on disk yet.
/// Bounded by the number of content folders (256 under the storage root).
#[derive(Debug, Default)]
pub struct NewEntries {
    dirs: Mutex<HashSet<PathBuf>>,
    spares: Option<Arc<Spares>>,
}

/// Empty files made ahead of creates.
#[derive(Debug)]
struct Spares {
    dir: PathBuf,
    /// Taken from the end: recycled files go there, new ones to the front.
    /// A spare holds no descriptor: a create only renames it into place
    /// (opening and closing it were two of the ten system calls a metadata
    /// thread made per create).
    ready: Mutex<Vec<PathBuf>>,
    /// Removed files renamed into the folder, to be emptied.
    recycling: Mutex<Vec<PathBuf>>,
    /// Signalled when the thread has work: fewer than `keep` spares ready,
    /// or a first file to recycle. Not for every create or removal: a
    /// wake-up each, with hundreds of recycled spares ready, was a context
    /// switch per create for nothing.
    taken: Condvar,
    keep: usize,
    /// In the names of the spares this run makes: a name an earlier run
    /// left is never met (its process id may well be this one's, pid 1 in
    /// a container).
    run: String,
    made: AtomicU64,
    used: AtomicU64,
    recycled: AtomicU64,
}

/// Removed files larger than this are unlinked, not recycled: emptying
/// them frees many blocks (a TRIM each, on a disk mounted with `discard`),
/// which would hold up the spare thread.
pub const RECYCLE_MAX_BYTES: u64 = 64 << 20;

/// The most spare files waiting, recycled ones included: a render that
/// replaces a few thousand frames reuses their files. Each costs an inode
/// and a folder entry, no blocks.
pub const SPARES_MAX: usize = 4096;

impl NewEntries {
    /// Keeps `keep` empty files ready in `storage/.markbase-spare` (Linux:
    /// the rename that refuses to replace is Linux's); 0 or elsewhere: off.
    pub fn with_spares(storage: &Path, keep: usize) -> NewEntries {
        if keep == 0 || !cfg!(target_os = "linux") {
            return NewEntries::default();
        }
        let dir = storage.join(SPARE_FOLDER);
        let spares = Arc::new(Spares {
            dir,
            ready: Mutex::new(Vec::new()),
            taken: Condvar::new(),
            keep,
            run: run_tag(),
            made: AtomicU64::new(0),
            used: AtomicU64::new(0),
            recycled: AtomicU64::new(0),
            recycling: Mutex::new(Vec::new()),
        });
        if let Err(e) = spares.start() {
            tracing::warn!(dir = %spares.dir.display(), error = %e, "spare content files off");
            return NewEntries::default();
        }
        NewEntries {
            dirs: Mutex::default(),
            spares: Some(spares),
        }
    }

    /// Spare files made and used so far.
    pub fn spares_made_used(&self) -> (u64, u64) {
        self.spares.as_ref().map_or((0, 0), |s| {
            (
                s.made.load(Ordering::Relaxed),
                s.used.load(Ordering::Relaxed),
            )
        })
    }

    /// Removed content files recycled as spares so far.
    pub fn recycled(&self) -> u64 {
        self.spares
            .as_ref()
            .map_or(0, |s| s.recycled.load(Ordering::Relaxed))
    }

    /// Takes the removed content file at `path` (nobody holds it open, and
    /// it is at most [`RECYCLE_MAX_BYTES`]) out of its folder to serve a
    /// later create; false when spares are off or enough are waiting, and
    /// the caller unlinks it.
    pub fn recycle(&self, path: &Path) -> bool {
        self.spares.as_ref().is_some_and(|s| s.recycle(path))
    }

    /// Creates a new, empty content file (failing if it exists), leaving
    /// its folder entry to be synced later.
    pub fn create_content(&self, path: &Path) -> io::Result<()> {
        let dir = path.parent().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "content path has no folder")
        })?;
        if self.spares.as_ref().is_some_and(|s| s.place(path, dir)) {
            self.remember(dir);
            return Ok(());
        }
        match create_new(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                // The new folder's own entry in its parent, once.
                if let Some(parent) = dir.parent() {
                    File::open(parent)?.sync_all()?;
                }
                create_new(path)?;
            }
            r => r?,
        }
        self.remember(dir);
        Ok(())
    }

    /// `dir` gained an entry not yet synced.
    fn remember(&self, dir: &Path) {
        let mut dirs = self.dirs.lock();
        if !dirs.contains(dir) {
            dirs.insert(dir.to_path_buf());
        }
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

impl Spares {
    /// Takes the spares a previous run left (empty ones) and starts the
    /// thread that keeps `keep` ready.
    fn start(self: &Arc<Self>) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut ready = Vec::new();
        for e in std::fs::read_dir(&self.dir)?.flatten() {
            let p = e.path();
            let empty = e.metadata().is_ok_and(|m| m.is_file() && m.len() == 0);
            if empty && ready.len() < SPARES_MAX {
                ready.push(p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
        *self.ready.lock() = ready;
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("spare-files".into())
            .spawn(move || refill(weak))?;
        Ok(())
    }

    fn recycle(&self, path: &Path) -> bool {
        if self.ready.lock().len() + self.recycling.lock().len() >= SPARES_MAX.max(self.keep) {
            return false;
        }
        let n = self.recycled.fetch_add(1, Ordering::Relaxed);
        let spare = self.dir.join(format!("recycled-{}-{n}", self.run));
        if rename_noreplace(path, &spare).is_err() {
            return false;
        }
        // The thread empties every file queued before it sleeps, and looks
        // at this queue under the ready lock: holding it here, the wake-up
        // cannot fall between its look and its wait.
        let ready = self.ready.lock();
        let mut recycling = self.recycling.lock();
        recycling.push(spare);
        if recycling.len() == 1 {
            self.taken.notify_one();
        }
        drop(recycling);
        drop(ready);
        true
    }

    /// Renames a spare to `path` (never over an existing file); false when
    /// none is ready or the rename fails (the caller creates the file).
    fn place(&self, path: &Path, dir: &Path) -> bool {
        let spare = {
            let mut ready = self.ready.lock();
            let Some(taken) = ready.pop() else {
                return false;
            };
            if ready.len() < self.keep {
                self.taken.notify_one();
            }
            taken
        };
        let mut r = rename_noreplace(&spare, path);
        if r.as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
            && !dir.exists()
        {
            r = std::fs::create_dir_all(dir).and_then(|_| rename_noreplace(&spare, path));
        }
        match r {
            Ok(()) => {
                self.used.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::debug!(spare = %spare.display(), path = %path.display(), error = %e, "spare not used");
                let _ = std::fs::remove_file(&spare);
                false
            }
        }
    }
}

/// Keeps the spares topped up until the pool is dropped: recycled files
/// first (emptied), then new ones while fewer than `keep` are ready.
fn refill(spares: Weak<Spares>) {
    loop {
        let Some(s) = spares.upgrade() else { return };
        let recycled = s.recycling.lock().pop();
        if let Some(p) = recycled {
            match emptied(&p) {
                Ok(()) => s.ready.lock().push(p),
                Err(e) => {
                    tracing::debug!(spare = %p.display(), error = %e, "recycled file not kept");
                    let _ = std::fs::remove_file(&p);
                }
            }
            continue;
        }
        {
            let mut ready = s.ready.lock();
            if ready.len() >= s.keep {
                // Under the ready lock, as `recycle` and `place` signal.
                if s.recycling.lock().is_empty() {
                    s.taken.wait_for(&mut ready, Duration::from_secs(1));
                }
                continue;
            }
        }
        let n = s.made.fetch_add(1, Ordering::Relaxed);
        let p = s.dir.join(format!("spare-{}-{n}", s.run));
        match create_new(&p) {
            Ok(()) => s.ready.lock().insert(0, p),
            Err(e) => {
                tracing::warn!(dir = %s.dir.display(), error = %e, "cannot make a spare content file");
                drop(s);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// A tag for this run's spare names: the process id and the start time.
fn run_tag() -> String {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{:x}", std::process::id(), since_epoch.as_nanos())
}

/// Empties a recycled file.
fn emptied(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(0)
}

/// rename(2) that fails if `to` exists (renameat2 RENAME_NOREPLACE).
#[cfg(target_os = "linux")]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let from = CString::new(from.as_os_str().as_bytes())?;
    let to = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: two NUL-terminated paths that live across the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Spares are off where there is no such rename (see `with_spares`).
#[cfg(not(target_os = "linux"))]
fn rename_noreplace(_from: &Path, _to: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Creates an empty file, failing if one exists.
fn create_new(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map(drop)
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

    /// The files in `storage`'s spare folder once there are `n` (or after
    /// 10 s).
    #[cfg(target_os = "linux")]
    fn spares_waiting(storage: &Path, n: usize) -> usize {
        let count = || {
            std::fs::read_dir(storage.join(SPARE_FOLDER))
                .unwrap()
                .count()
        };
        let t = std::time::Instant::now();
        while count() < n && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        count()
    }

    /// A storage folder with spares on (four kept) and all four made.
    #[cfg(target_os = "linux")]
    fn four_spares_ready() -> (tempfile::TempDir, NewEntries) {
        let dir = tempfile::tempdir().unwrap();
        let entries = NewEntries::with_spares(dir.path(), 4);
        assert_eq!(spares_waiting(dir.path(), 4), 4, "the thread makes four");
        (dir, entries)
    }

    /// The spares ready (emptied, for recycled ones) once there are `n`
    /// (or after 10 s).
    #[cfg(target_os = "linux")]
    fn spares_ready(entries: &NewEntries, n: usize) -> usize {
        let ready = || entries.spares.as_ref().unwrap().ready.lock().len();
        let t = std::time::Instant::now();
        while ready() < n && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        ready()
    }

    /// An earlier run with this process id (a container's pid 1) left
    /// entries under the names it gave its spares, which start-up cannot
    /// clear (folders here): the thread still makes four spares at once.
    /// It used to meet each name, log a warning and sleep a second.
    #[cfg(target_os = "linux")]
    #[test]
    fn names_an_earlier_run_left_do_not_hold_up_new_spares() {
        let dir = tempfile::tempdir().unwrap();
        let spare_dir = dir.path().join(SPARE_FOLDER);
        for n in 0..4 {
            let left = spare_dir.join(format!("spare-{}-{n}", std::process::id()));
            std::fs::create_dir_all(left).unwrap();
        }
        let t = std::time::Instant::now();
        let entries = NewEntries::with_spares(dir.path(), 4);
        assert_eq!(spares_ready(&entries, 4), 4);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn creates_take_spare_files_and_never_replace_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let entries = NewEntries::with_spares(dir.path(), 4);
        assert_eq!(
            spares_waiting(dir.path(), 4),
            4,
            "the thread keeps four ready"
        );
        let a = dir.path().join("ab").join("one");
        entries.create_content(&a).unwrap();
        assert_eq!(std::fs::metadata(&a).unwrap().len(), 0);
        assert_eq!(entries.spares_made_used().1, 1, "a spare was used");
        assert_eq!(entries.pending(), 1, "its folder entry is still to sync");
        std::fs::write(&a, b"kept").unwrap();
        assert!(entries.create_content(&a).is_err(), "never over a file");
        assert_eq!(std::fs::read(&a).unwrap(), b"kept");
        // A new run takes the spares left behind.
        drop(entries);
        let again = NewEntries::with_spares(dir.path(), 4);
        again
            .create_content(&dir.path().join("cd").join("two"))
            .unwrap();
        assert!(again.spares_made_used().1 == 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_removed_file_is_emptied_and_serves_the_next_create() {
        use std::os::unix::fs::MetadataExt;
        let (dir, entries) = four_spares_ready();
        let old = dir.path().join("ab").join("old");
        entries.create_content(&old).unwrap();
        std::fs::write(&old, vec![7u8; 100_000]).unwrap();
        let ino = std::fs::metadata(&old).unwrap().ino();
        spares_waiting(dir.path(), 4);
        assert!(entries.recycle(&old), "taken for recycling");
        assert!(!old.exists(), "its name is gone at once");
        // Emptied and waiting beside the four new spares.
        assert_eq!(spares_ready(&entries, 5), 5);
        let new = dir.path().join("cd").join("new");
        entries.create_content(&new).unwrap();
        let m = std::fs::metadata(&new).unwrap();
        assert_eq!(m.ino(), ino, "the recycled file served the create");
        assert_eq!(m.len(), 0, "nothing of the removed file is left");
        assert_eq!(std::fs::read(&new).unwrap(), b"");
        assert_eq!(entries.recycled(), 1);
        // SPARES_MAX is the most waiting: then unlink.
        let made: Vec<PathBuf> = (0..SPARES_MAX + 10)
            .map(|i| {
                let p = dir.path().join("ef").join(format!("f{i}"));
                entries.create_content(&p).unwrap();
                p
            })
            .collect();
        let mut refused = false;
        for p in made {
            if !entries.recycle(&p) {
                refused = true;
                assert!(p.exists(), "a refused file stays for the caller");
                break;
            }
        }
        assert!(refused, "recycling is bounded");
    }

    /// The thread is woken only when it has work (the first file of a burst
    /// to recycle; fewer than `keep` ready): every file of a burst is still
    /// emptied, and spares taken below `keep` are still made again.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_burst_of_removals_is_all_emptied_and_spares_taken_are_made_again() {
        let (dir, entries) = four_spares_ready();
        let spares = entries.spares.as_ref().unwrap();
        let ready_reaches = |n: usize| spares_ready(&entries, n);
        let files: Vec<PathBuf> = (0..20)
            .map(|i| {
                let p = dir.path().join("ab").join(format!("frame{i}"));
                entries.create_content(&p).unwrap();
                std::fs::write(&p, vec![1u8; 4096]).unwrap();
                p
            })
            .collect();
        assert_eq!(
            ready_reaches(4),
            4,
            "spares taken by the creates made again"
        );
        for p in &files {
            assert!(entries.recycle(p));
        }
        assert_eq!(ready_reaches(24), 24, "all twenty emptied and ready");
        assert!(spares.recycling.lock().is_empty());
        for i in 0..22 {
            let p = dir.path().join("cd").join(format!("new{i}"));
            entries.create_content(&p).unwrap();
            assert_eq!(std::fs::metadata(&p).unwrap().len(), 0, "{}", p.display());
        }
        assert_eq!(
            ready_reaches(4),
            4,
            "down to two, the thread makes two more"
        );
    }
}
