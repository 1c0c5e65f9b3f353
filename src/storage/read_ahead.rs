//! Read-ahead for streaming READs: which windows to ask the kernel for
//! (`ReadAhead::plan`) and the WILLNEED advice the read-ahead thread
//! gives. The pool decides when; this file only what and how.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::PooledFile;

/// Read-ahead windows queued for the read-ahead thread; more are dropped.
pub(super) const PREFETCH_QUEUE: usize = 8;

/// One read-ahead window, requested by the read-ahead thread.
pub(super) struct PrefetchJob {
    pub(super) file: Arc<PooledFile>,
    pub(super) start: u64,
    pub(super) len: u64,
}

/// Prefetch for streaming READs. A client keeps several READs of one file
/// in flight and the blocking pool runs them in any order, which the
/// kernel's own read-ahead can take for random access; asking for the
/// windows ahead of the reader explicitly (`POSIX_FADV_WILLNEED`, which
/// starts the reads and returns) keeps the disk busy ahead of playback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAhead {
    /// Window size in bytes; 0 turns read-ahead off.
    pub window: u64,
    /// Windows kept requested ahead of the reader.
    pub windows: u64,
}

impl ReadAhead {
    pub const OFF: ReadAhead = ReadAhead {
        window: 0,
        windows: 0,
    };

    /// The window to prefetch for a READ ending at `end`, given the mark
    /// (where the next window starts): the mark's window while it is less
    /// than `windows` ahead of `end`; after a seek the stream restarts at
    /// `end`.
    pub(super) fn plan(&self, mark: u64, end: u64) -> Option<u64> {
        let w = self.window;
        if w == 0 {
            return None;
        }
        let want = end.saturating_add(self.windows * w);
        let start = if mark.saturating_add(w) < end || mark > want.saturating_add(w) {
            end
        } else {
            mark
        };
        (start < want).then_some(start)
    }

    /// The window a READ ending at `end` should have requested, if any
    /// (claimed on the file so concurrent READs ask once).
    pub(super) fn claim(&self, file: &PooledFile, end: u64) -> Option<u64> {
        let mark = file.ahead.load(Ordering::Relaxed);
        let start = self.plan(mark, end)?;
        file.ahead
            .compare_exchange(
                mark,
                start + self.window,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .ok()
            .map(|_| start)
    }
}

#[cfg(target_os = "linux")]
pub(super) fn prefetch(f: &File, start: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads its integer arguments; the
    // descriptor is open for the call's duration.
    unsafe {
        libc::posix_fadvise(
            f.as_raw_fd(),
            start as i64,
            len as i64,
            libc::POSIX_FADV_WILLNEED,
        );
    }
}

/// macOS: its own read-ahead follows sequential reads (F_RDADVISE would be
/// the explicit form).
#[cfg(not(target_os = "linux"))]
pub(super) fn prefetch(_f: &File, _start: u64, _len: u64) {}
