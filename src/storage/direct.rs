//! Direct writes behind the reply: an UNSTABLE payload bound for O_DIRECT
//! is copied into an aligned buffer and queued for the direct-writer
//! thread, and the WRITE is answered at once. The thread writes the queue
//! to disk in arrival order, one payload at a time (what this disk takes
//! best), so the disk stays busy while the next payloads cross the socket
//! and the client's next frame is already on its way.
//!
//! Answering before the data is on disk is what UNSTABLE4 allows (RFC 7530
//! §16.36: the server may keep any of it off stable storage until COMMIT);
//! the page cache keeps buffered UNSTABLE data the same way. What changes
//! is who must wait for the queue:
//! - a READ or a buffered WRITE of a range a queued payload overlaps waits
//!   for that payload (each sees the bytes in the order they arrived);
//! - COMMIT, FILE_SYNC/DATA_SYNC WRITEs, a size change and shutdown wait
//!   for all of the file's payloads, and COMMIT reports a payload that
//!   failed to reach the disk (the WRITE was already answered);
//! - a crash loses the queue like the page cache: the write verifier
//!   changes at every start, so clients send again what was not COMMITted.
//!
//! Payloads are tracked by fileid, not by descriptor, so an evicted and
//! reopened pool entry still sees the queue of its file.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{release, AlignedBuf, AlignedPool, Closing, PooledFile};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// The byte ranges queued for disk per file, and the first error a queued
/// payload met there.
#[derive(Default)]
pub(super) struct Pending {
    files: parking_lot::Mutex<HashMap<u64, FilePending>>,
    /// Signalled each time a payload leaves the queue.
    landed: parking_lot::Condvar,
    /// Payloads queued for all files: READs skip the lock when none are.
    queued: AtomicUsize,
}

#[derive(Default)]
struct FilePending {
    /// `[start, end)` of each queued payload, oldest first.
    ranges: Vec<(u64, u64)>,
    /// A payload that did not reach the disk, kept for the next COMMIT.
    error: Option<io::Error>,
}

impl FilePending {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.ranges.iter().any(|&(s, e)| s < end && start < e)
    }
}

impl Pending {
    /// Records a payload of `len` bytes at `offset` of `fileid` as queued.
    pub(super) fn queue(&self, fileid: u64, offset: u64, len: usize) {
        let mut files = self.files.lock();
        files
            .entry(fileid)
            .or_default()
            .ranges
            .push((offset, offset + len as u64));
        self.queued.fetch_add(1, Ordering::Release);
    }

    /// The payload at `offset` of `fileid` left the queue: on disk, or
    /// failed with `result`'s error (kept for the file's next COMMIT).
    pub(super) fn landed(&self, fileid: u64, offset: u64, result: io::Result<()>) {
        let mut files = self.files.lock();
        if let Some(file) = files.get_mut(&fileid) {
            if let Some(i) = file.ranges.iter().position(|&(s, _)| s == offset) {
                file.ranges.remove(i);
            }
            if let Err(e) = result {
                file.error.get_or_insert(e);
            }
            if file.ranges.is_empty() && file.error.is_none() {
                files.remove(&fileid);
            }
        }
        self.queued.fetch_sub(1, Ordering::Release);
        drop(files);
        self.landed.notify_all();
    }

    /// Waits until no queued payload of `fileid` overlaps `[start, end)`.
    pub(super) fn wait_range(&self, fileid: u64, start: u64, end: u64) {
        if self.queued.load(Ordering::Acquire) == 0 || start >= end {
            return;
        }
        let mut files = self.files.lock();
        while files.get(&fileid).is_some_and(|f| f.overlaps(start, end)) {
            self.landed.wait(&mut files);
        }
    }

    /// Waits until none of `fileid`'s payloads is queued, then hands over
    /// the error one of them met, if any (once: a later COMMIT of data
    /// written since is judged on its own).
    pub(super) fn settle(&self, fileid: u64) -> io::Result<()> {
        let mut files = self.files.lock();
        self.wait_file_locked(&mut files, fileid);
        take_error(&mut files, fileid)
    }

    /// Waits until none of `fileid`'s payloads is queued, leaving an error
    /// one of them met for the next COMMIT (a size change).
    pub(super) fn wait_file(&self, fileid: u64) {
        if self.queued.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut files = self.files.lock();
        self.wait_file_locked(&mut files, fileid);
    }

    fn wait_file_locked(
        &self,
        files: &mut parking_lot::MutexGuard<'_, HashMap<u64, FilePending>>,
        fileid: u64,
    ) {
        while files.get(&fileid).is_some_and(|f| !f.ranges.is_empty()) {
            self.landed.wait(files);
        }
    }

    /// Waits until nothing is queued for any file (shutdown).
    pub(super) fn drain(&self) {
        let mut files = self.files.lock();
        while self.queued.load(Ordering::Acquire) > 0 {
            self.landed.wait(&mut files);
        }
    }

    /// Payloads queued now, for all files.
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

fn take_error(files: &mut HashMap<u64, FilePending>, fileid: u64) -> io::Result<()> {
    let Some(file) = files.get_mut(&fileid) else {
        return Ok(());
    };
    let error = file.error.take();
    if file.ranges.is_empty() {
        files.remove(&fileid);
    }
    // The error as the disk gave it (ENOSPC stays NFS4ERR_NOSPC); the
    // direct-writer logged which payload met it.
    error.map_or(Ok(()), Err)
}

/// Writes an aligned payload with O_DIRECT in the file's turn; without a
/// direct descriptor, or on a file system that refuses (EINVAL), it gets
/// a buffered write.
pub(super) fn write_direct_now(
    file: &PooledFile,
    direct: Option<&File>,
    offset: u64,
    data: &[u8],
    written: &AtomicU64,
) -> io::Result<()> {
    let _turn = file.serial.lock();
    match direct.map(|d| d.write_all_at(data, offset)) {
        Some(Ok(())) => {
            written.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Some(Err(e)) if e.raw_os_error() != Some(libc::EINVAL) => Err(e),
        _ => file.write_all_at(data, offset),
    }
}

/// A direct payload answered and queued for the direct-writer thread.
pub(super) struct DirectJob {
    pub(super) file: Arc<PooledFile>,
    pub(super) offset: u64,
    pub(super) buf: AlignedBuf,
    pub(super) len: usize,
}

impl DirectJob {
    pub(super) fn write(&self, written: &AtomicU64) -> io::Result<()> {
        let data = &self.buf.as_ref()[..self.len];
        write_direct_now(
            &self.file,
            self.file.direct_file(),
            self.offset,
            data,
            written,
        )
    }

    /// Writes the payload on this thread and gives its buffer back.
    pub(super) fn write_here(self, aligned: &AlignedPool, written: &AtomicU64) -> io::Result<()> {
        let result = self.write(written);
        aligned.give(self.buf);
        result
    }

    /// The direct-writer thread's work: writes the payload (not when its
    /// file was removed meanwhile: that content is going away), then lets
    /// waiters for its range go on.
    pub(super) fn run(
        self,
        aligned: &AlignedPool,
        pending: &Pending,
        written: &AtomicU64,
        closer: Option<&crossbeam_channel::Sender<Closing>>,
    ) {
        let result = if self.file.removed.load(Ordering::Relaxed) {
            Ok(())
        } else {
            self.write(written)
        };
        let DirectJob {
            file,
            offset,
            buf,
            len,
        } = self;
        if let Err(e) = &result {
            tracing::error!(
                fileid = file.fileid,
                offset,
                len,
                error = %e,
                "a WRITE answered before it reached the disk failed there; the file's next COMMIT reports it"
            );
        }
        aligned.give(buf);
        pending.landed(file.fileid, offset, result);
        release(closer, file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn overlapping_ranges_wait_and_disjoint_ones_do_not() {
        let p = Arc::new(Pending::default());
        p.queue(7, 0, 4096);
        p.queue(7, 1 << 20, 1 << 20);
        // Other files, and ranges of this one between the payloads or
        // touching one only at its end, go on at once.
        p.wait_range(8, 0, 1 << 30);
        p.wait_range(7, 4096, 1 << 20);
        p.wait_range(7, 2 << 20, 3 << 20);
        assert_eq!(p.queued(), 2);
        // A range over the second payload waits for it to land.
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let p = p.clone();
            std::thread::spawn(move || {
                p.wait_range(7, (2 << 20) - 1, 2 << 20);
                tx.send(()).unwrap();
            })
        };
        assert!(
            rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "a READ over a queued payload did not wait"
        );
        p.landed(7, 0, Ok(()));
        assert!(
            rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "it went on when another payload landed"
        );
        p.landed(7, 1 << 20, Ok(()));
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the waiter was not woken");
        waiter.join().unwrap();
        assert_eq!(p.queued(), 0);
        assert!(p.files.lock().is_empty(), "a landed file's entry stayed");
    }

    #[test]
    fn settle_waits_for_the_whole_file_and_reports_an_error_once() {
        let p = Arc::new(Pending::default());
        p.queue(3, 0, 1 << 20);
        p.queue(3, 1 << 20, 1 << 20);
        let settler = {
            let p = p.clone();
            std::thread::spawn(move || p.settle(3))
        };
        p.landed(3, 0, Err(io::Error::from_raw_os_error(libc::ENOSPC)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !settler.is_finished(),
            "settled with a payload still queued"
        );
        p.landed(3, 1 << 20, Ok(()));
        let err = settler
            .join()
            .unwrap()
            .expect_err("the failed payload was not reported");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        // Reported once; a file with nothing queued settles at once.
        p.settle(3).expect("the error was reported twice");
        p.settle(4).unwrap();
        p.drain();
    }

    #[test]
    fn drain_waits_for_every_file() {
        let p = Arc::new(Pending::default());
        p.queue(1, 0, 10);
        p.queue(2, 0, 10);
        let drainer = {
            let p = p.clone();
            std::thread::spawn(move || p.drain())
        };
        p.landed(1, 0, Ok(()));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!drainer.is_finished(), "drained with file 2 queued");
        p.landed(2, 0, Ok(()));
        drainer.join().unwrap();
    }
}
