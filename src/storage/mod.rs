//! Content files on local disk: a bounded pool of open descriptors shared by
//! every connection, positional reads into a caller's buffer, and the
//! statistics NFS reports about the volume.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use moka::sync::Cache;

/// An open content file in the pool.
#[derive(Debug)]
pub struct PooledFile {
    pub file: File,
    pub writable: bool,
}

impl std::ops::Deref for PooledFile {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}

/// Open content files keyed by the node's fileid. Opening a file per
/// READ/WRITE is what this avoids: the descriptor lives across RPCs and
/// connections until evicted (bounded by `capacity`).
pub struct FilePool {
    files: Cache<u64, Arc<PooledFile>>,
    opens: std::sync::atomic::AtomicU64,
}

impl FilePool {
    pub fn new(capacity: u64) -> FilePool {
        FilePool {
            files: Cache::new(capacity.max(1)),
            opens: Default::default(),
        }
    }

    /// The open file for `fileid`, opening `path` on a miss (read-write
    /// when permitted, so a later WRITE needs no reopen).
    pub fn get(&self, fileid: u64, path: &Path) -> io::Result<Arc<PooledFile>> {
        if let Some(f) = self.files.get(&fileid) {
            return Ok(f);
        }
        let pooled = match open_read_write(path) {
            Ok(file) => PooledFile {
                file,
                writable: true,
            },
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => PooledFile {
                file: open_for_read(path)?,
                writable: false,
            },
            Err(e) => return Err(e),
        };
        self.opens
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let f = Arc::new(pooled);
        self.files.insert(fileid, f.clone());
        Ok(f)
    }

    /// The open file for writing: PermissionDenied if the content file is
    /// read-only on disk.
    pub fn get_writable(&self, fileid: u64, path: &Path) -> io::Result<Arc<PooledFile>> {
        let f = self.get(fileid, path)?;
        if f.writable {
            Ok(f)
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("content file {} is read-only on disk", path.display()),
            ))
        }
    }

    /// Descriptors opened since start (tests prove pooling with it).
    pub fn opens(&self) -> u64 {
        self.opens.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn forget(&self, fileid: u64) {
        self.files.invalidate(&fileid);
    }
}

fn open_read_write(path: &Path) -> io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    advise_sequential(&f);
    Ok(f)
}

fn open_for_read(path: &Path) -> io::Result<File> {
    let f = File::open(path)?;
    advise_sequential(&f);
    Ok(f)
}

/// Tells the kernel to read ahead aggressively: masters are played
/// front to back.
#[cfg(target_os = "linux")]
fn advise_sequential(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads its integer arguments; the fd is open.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_sequential(_f: &File) {}

/// Creates a new, empty content file (failing if it exists) and makes its
/// directory entry durable, so a catalog row committed after this never
/// points at a file a crash could lose.
pub fn create_content(path: &Path) -> io::Result<File> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "content path has no folder"))?;
    std::fs::create_dir_all(dir)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    File::open(dir)?.sync_all()?;
    Ok(f)
}

/// Writes all of `data` at `offset`.
pub fn write_at(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    file.write_all_at(data, offset)
}

/// Puts the file's data (and the size needed to read it back) on stable
/// storage: fdatasync on Linux; on macOS std's sync_data issues
/// F_FULLFSYNC, which also flushes the drive's cache.
pub fn sync_data(file: &File) -> io::Result<()> {
    file.sync_data()
}

/// Reads up to `count` bytes at `offset` into a new buffer; short only at
/// end of file. Returns the bytes and whether the end of file was reached.
pub fn read_at(file: &File, offset: u64, count: usize) -> io::Result<(Vec<u8>, bool)> {
    let mut buf = vec![0u8; count];
    let mut got = 0;
    while got < count {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok((buf, got < count))
}

/// Space and file-count figures for FSSTAT-like attributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeStats {
    pub bytes_total: u64,
    pub bytes_free: u64,
    pub bytes_avail: u64,
    pub files_total: u64,
    pub files_free: u64,
    pub files_avail: u64,
}

/// statvfs of the folder that holds the content.
pub fn volume_stats(dir: &Path) -> io::Result<VolumeStats> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: statvfs writes into the zeroed struct we own; c is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = s.f_frsize as u64;
    Ok(VolumeStats {
        bytes_total: s.f_blocks as u64 * frsize,
        bytes_free: s.f_bfree as u64 * frsize,
        bytes_avail: s.f_bavail as u64 * frsize,
        files_total: s.f_files as u64,
        files_free: s.f_ffree as u64,
        files_avail: s.f_favail as u64,
    })
}

/// The export's storage folder, created if needed.
pub fn ensure_storage_dir(dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    dir.canonicalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn pool_reuses_descriptors_and_reads_short_at_eof() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::File::create(&p)
            .unwrap()
            .write_all(b"0123456789")
            .unwrap();
        let pool = FilePool::new(4);
        let f = pool.get(7, &p).unwrap();
        let (data, eof) = read_at(&f, 2, 4).unwrap();
        assert_eq!((&data[..], eof), (&b"2345"[..], false));
        let f = pool.get(7, &p).unwrap();
        let (data, eof) = read_at(&f, 8, 4).unwrap();
        assert_eq!((&data[..], eof), (&b"89"[..], true));
        assert_eq!(pool.opens(), 1);
        assert!(pool.get(8, &dir.path().join("missing")).is_err());
        assert!(volume_stats(dir.path()).unwrap().bytes_total > 0);
    }
}
