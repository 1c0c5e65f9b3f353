//! O_DIRECT and its aligned memory: opening a content file again for
//! direct I/O, telling whether a range is in the page cache (`cachestat`),
//! the sizes and alignment direct READs and WRITEs need, and the pool of
//! 1 MiB aligned buffers they use. Called by the pool (`mod.rs`) and the
//! direct writer (`direct.rs`); calls nothing else of storage.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The content file opened again with O_DIRECT; None where the file
/// system or the system refuses it.
#[cfg(target_os = "linux")]
pub(super) fn open_direct(path: &Path, writable: bool) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(
            |e| tracing::debug!(path = %path.display(), error = %e, "no O_DIRECT: buffered I/O"),
        )
        .ok()
}

#[cfg(not(target_os = "linux"))]
pub(super) fn open_direct(_path: &Path, _writable: bool) -> Option<File> {
    None
}

/// Whether no page of `[offset, offset + len)` is in the page cache (so
/// a READ of it would go to disk anyway). False when unsure: `cachestat`
/// needs Linux 6.5, and without it every READ stays buffered.
pub(super) fn not_cached(file: &File, offset: u64, len: usize) -> bool {
    static MISSING: AtomicBool = AtomicBool::new(false);
    if MISSING.load(Ordering::Relaxed) {
        return false;
    }
    match pages_cached(file, offset, len as u64) {
        Ok(cached) => cached == 0,
        Err(e) => {
            if e.raw_os_error() == Some(libc::ENOSYS) {
                MISSING.store(true, Ordering::Relaxed);
            }
            false
        }
    }
}

/// Whether this system can tell which pages of a file are cached, i.e.
/// whether direct reads can be used (Linux 6.5 and later).
pub fn direct_reads_supported() -> bool {
    std::env::current_exe()
        .and_then(File::open)
        .and_then(|exe| pages_cached(&exe, 0, 4096))
        .is_ok()
}

/// Pages of `[offset, offset + len)` in the page cache (`cachestat`).
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub(super) fn pages_cached(file: &File, offset: u64, len: u64) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    /// `cachestat`'s number on both architectures (not in the libc crate).
    const SYS_CACHESTAT: libc::c_long = 451;
    #[repr(C)]
    struct CachestatRange {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Cachestat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    let range = CachestatRange { off: offset, len };
    let mut stat = Cachestat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both live for
    // the call; the descriptor is open for its duration.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0,
        )
    };
    if r == 0 {
        Ok(stat.nr_cache)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
pub(super) fn pages_cached(_file: &File, _offset: u64, _len: u64) -> io::Result<u64> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Smallest READ or WRITE that may go direct. Smaller ones wait on the
/// disk one at a time for too little data each, and go faster through the
/// page cache (its write-back and read-ahead work in larger pieces): bench
/// and aja, this machine, direct against buffered — WRITEs of 64 KiB ×16
/// 395–430 against 1009–1026 MB/s, of 256 KiB ×16 706–920 against
/// 1385–1490; READs of 256 KiB ×16 from cold disk 521–880 against
/// 970–1023; at 512 KiB about even (writes 1295–1371 against 1261–1294,
/// reads 740–1210 against 854–1020); at 1 MiB direct is ahead.
pub(super) const DIRECT_MIN: usize = 512 << 10;

/// O_DIRECT's alignment of offsets, lengths and memory (the logical block
/// size of common disks is 512 or 4096).
pub(super) const DIRECT_ALIGN: usize = 4096;
/// Size of the aligned buffers: the largest payload spliced.
pub(super) const ALIGNED_BUF: usize = 1 << 20;
/// Direct payloads in flight on one streaming connection beside its queue
/// (the Linux client and aja keep 16 WRITEs in flight).
pub(super) const DIRECT_IN_FLIGHT: usize = 16;
/// Aligned buffers kept for reuse: one per READ or WRITE in flight on a
/// busy connection (plus one per place in the direct-writer's queue).
pub(super) const ALIGNED_KEPT: usize = 64;

/// Aligned buffers for reuse: fresh memory costs page faults (and, on a
/// VM, the host's), a reused buffer none.
pub(super) struct AlignedPool {
    pub(super) free: parking_lot::Mutex<Vec<AlignedBuf>>,
    /// Buffers kept for reuse at most.
    pub(super) keep: usize,
}

impl Default for AlignedPool {
    fn default() -> Self {
        AlignedPool::keeping(ALIGNED_KEPT)
    }
}

impl AlignedPool {
    pub(super) fn keeping(keep: usize) -> AlignedPool {
        AlignedPool {
            free: Default::default(),
            keep,
        }
    }

    pub(super) fn take(&self) -> AlignedBuf {
        self.free.lock().pop().unwrap_or_else(AlignedBuf::new)
    }

    /// Fills the pool with `count` buffers whose pages are backed: a
    /// direct-writer queue growing for the first time during a stream
    /// otherwise page-faults fresh memory (on this VM, memory the host
    /// must back again: ~3 ms a MiB) in the middle of frames — 25–30 ms
    /// frames at the first spell of slow disk.
    pub(super) fn prefill(&self, count: usize) {
        for _ in 0..count.min(self.keep) {
            let mut buf = AlignedBuf::new();
            for page in buf.as_mut().chunks_mut(4096) {
                // SAFETY: a valid, exclusively borrowed byte; volatile so
                // the store (and the fault that backs the page) happens.
                unsafe { std::ptr::write_volatile(&mut page[0], 0) };
            }
            self.give(buf);
        }
    }

    pub(super) fn give(&self, buf: AlignedBuf) {
        let mut free = self.free.lock();
        if free.len() < self.keep {
            free.push(buf);
        }
    }
}

/// A direct READ's bytes: the first `len` of an aligned buffer, which
/// goes back to its pool when the reply has been sent.
pub(super) struct AlignedBytes {
    pub(super) buf: Option<AlignedBuf>,
    pub(super) len: usize,
    pub(super) pool: Arc<AlignedPool>,
}

impl AsRef<[u8]> for AlignedBytes {
    fn as_ref(&self) -> &[u8] {
        match &self.buf {
            Some(buf) => &buf.as_ref()[..self.len],
            None => &[],
        }
    }
}

impl Drop for AlignedBytes {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give(buf);
        }
    }
}

/// A 1 MiB buffer aligned for O_DIRECT.
pub(super) struct AlignedBuf(std::ptr::NonNull<u8>);

// SAFETY: the buffer is owned memory with no thread affinity.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    pub(super) fn layout() -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(ALIGNED_BUF, DIRECT_ALIGN).expect("valid layout")
    }

    pub(super) fn new() -> AlignedBuf {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(Self::layout()) };
        AlignedBuf(
            std::ptr::NonNull::new(p)
                .unwrap_or_else(|| std::alloc::handle_alloc_error(Self::layout())),
        )
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: ALIGNED_BUF initialised bytes, shared borrow.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), ALIGNED_BUF) }
    }
}

impl AsMut<[u8]> for AlignedBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ALIGNED_BUF initialised bytes, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), ALIGNED_BUF) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { std::alloc::dealloc(self.0.as_ptr(), Self::layout()) }
    }
}
