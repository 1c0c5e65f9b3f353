//! The content volume's figures (statvfs) that FSSTAT and the space
//! attributes report, and the storage folder's creation.

use std::io;
use std::path::{Path, PathBuf};

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
