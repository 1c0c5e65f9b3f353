//! What a FILE_SYNC4 (or DATA_SYNC4) WRITE does to reach stable storage:
//! the `storage.file_sync` policy.
//!
//! A Mac writing with its cache off (AJA System Test's "Disable file system
//! cache", apps using F_NOCACHE) sends the WRITEs that hold a frame's first
//! and last partial page FILE_SYNC: two per frame, in the middle of an
//! UNSTABLE stream. Syncing the whole file for each (fdatasync) makes every
//! such WRITE wait for all the stream's dirty data; syncing only its own
//! range does not.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use serde::Deserialize;

/// How a FILE_SYNC WRITE is made durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileSync {
    /// The WRITE's own bytes and the size needed to read them, then the
    /// drive's cache is flushed: durable across a crash and a power loss.
    /// Linux: `pwritev2(RWF_DSYNC)`, a data sync of that range only. macOS
    /// has no range form and does what `Full` does.
    #[default]
    Range,
    /// The whole file's data and size, then the drive's cache is flushed
    /// (fdatasync; F_FULLFSYNC on macOS): durable across a crash and a
    /// power loss, and the WRITE waits for every byte the file has dirty.
    Full,
    /// The WRITE's bytes are handed to the drive and the call waits for
    /// them, without flushing the drive's cache or the size (Linux:
    /// sync_file_range; macOS: F_BARRIERFSYNC): survives the server's crash
    /// or kill, not a power loss of a drive whose cache is volatile.
    Barrier,
}

impl FileSync {
    /// Writes `data` at `offset` and makes it durable as the policy says.
    /// Writes of other ranges are not waited for.
    pub fn write(self, file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        match self {
            FileSync::Range => write_dsync(file, offset, data),
            FileSync::Full => {
                file.write_all_at(data, offset)?;
                // fdatasync on Linux; std's sync_data is F_FULLFSYNC on macOS.
                file.sync_data()
            }
            FileSync::Barrier => {
                file.write_all_at(data, offset)?;
                barrier(file, offset, data.len() as u64)
            }
        }
    }
}

/// Writes with RWF_DSYNC: the kernel syncs this write's range (and the
/// size, when it grew) before returning.
#[cfg(target_os = "linux")]
fn write_dsync(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut done = 0usize;
    while done < data.len() {
        let rest = &data[done..];
        let iov = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: one iovec over live memory of the given length.
        let n = unsafe {
            libc::pwritev2(
                file.as_raw_fd(),
                &iov,
                1,
                (offset + done as u64) as libc::off_t,
                libc::RWF_DSYNC,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Kernels before 4.7 know no pwritev2 flags: sync the file.
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) || e.raw_os_error() == Some(libc::ENOSYS)
            {
                file.write_all_at(rest, offset + done as u64)?;
                return file.sync_data();
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n as usize;
    }
    Ok(())
}

/// No range form elsewhere: the whole file (F_FULLFSYNC on macOS).
#[cfg(not(target_os = "linux"))]
fn write_dsync(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    file.write_all_at(data, offset)?;
    file.sync_data()
}

#[cfg(target_os = "linux")]
fn barrier(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a plain syscall on an open descriptor.
    let rc = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            flags,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(target_os = "macos")]
fn barrier(file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain fcntl on an open descriptor.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_BARRIERFSYNC) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn barrier(file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_writes_the_bytes_where_asked() {
        let dir = tempfile::tempdir().unwrap();
        for (i, mode) in [FileSync::Range, FileSync::Full, FileSync::Barrier]
            .into_iter()
            .enumerate()
        {
            let path = dir.path().join(format!("f{i}"));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            mode.write(&f, 0, b"unstable stream ").unwrap();
            mode.write(&f, 16384 - 4, b"page edge").unwrap();
            let got = std::fs::read(&path).unwrap();
            assert_eq!(got.len(), 16384 - 4 + 9, "{mode:?}");
            assert_eq!(&got[..16], b"unstable stream ");
            assert_eq!(&got[16384 - 4..], b"page edge");
        }
        let parsed: FileSync = toml::from_str::<toml::Value>("m = \"barrier\"")
            .unwrap()
            .get("m")
            .unwrap()
            .clone()
            .try_into()
            .unwrap();
        assert_eq!(parsed, FileSync::Barrier);
    }
}
