//! Write-behind and pacing for streaming WRITEs: each completed window of
//! a stream is sent to disk at once (`sync_file_range`), the window `lag`
//! back waited for and dropped from the page cache; the write-behind
//! thread measures the disk's rate as it goes, and the `Pacer` holds
//! WRITEs to it once the queue passes a few windows. Called by the pool
//! (`mod.rs`); calls the closer (`closer.rs`).

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::closer::{release, Closing};
use super::PooledFile;

/// Streaming writes without dirty-page pile-up. Left to itself, the kernel
/// lets a long render fill memory with dirty pages and then throttles the
/// writer hard (measured here: 8 GiB of 1 MiB `pwrite`s sustain ~850 MB/s
/// with 40 ms stalls). Sending each completed window to disk at once
/// (`sync_file_range`), waiting for the window `lag` windows back and
/// dropping it from the page cache keeps the stream at the disk's pace
/// (~2 GB/s, stalls under 13 ms on the same disk). Durability is unchanged:
/// COMMIT still runs fdatasync; this only decides when pages get written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBehind {
    /// Window size in bytes; 0 turns write-behind off.
    pub window: u64,
    /// Windows in flight to disk before the write-behind thread waits for
    /// the oldest. Kept short: all of them sit in the disk's queue, and so
    /// does any read the file system needs meanwhile — a block bitmap for
    /// the next allocation, read while writeback holds the inode's block map
    /// lock, which the next WRITE then waits for (32 windows: frames of
    /// 100–360 ms; 8: none over 90 ms in the runs measured).
    pub lag: u64,
    /// Windows that may wait for the write-behind thread. Past
    /// [`PACE_FREE`] waiting, WRITEs are paced to about the disk's
    /// long-run rate (see [`paced_rate`]); when the queue is full they
    /// wait for it.
    pub backlog: u64,
}

/// The disk work one write asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Flush {
    /// The write-behind mark after this flush.
    pub(super) mark: u64,
    /// Start writeback of `[start, start + window)`.
    pub(super) start: u64,
    /// Wait for `[retire, retire + window)` and drop it from the cache.
    pub(super) retire: Option<u64>,
}

impl WriteBehind {
    pub const OFF: WriteBehind = WriteBehind {
        window: 0,
        lag: 0,
        backlog: 0,
    };

    /// What a write ending at `end` asks for, given the mark (where the next
    /// window starts), or None while no window is complete. A write far from
    /// the mark (a seek, a rewrite from the start) restarts the stream at
    /// the window holding `end`.
    pub(super) fn plan(&self, mark: u64, end: u64) -> Option<Flush> {
        let w = self.window;
        if w == 0 {
            return None;
        }
        let reach = w * (self.lag + 2);
        let start = if end >= mark.saturating_add(reach) || end.saturating_add(reach) <= mark {
            (end / w).checked_sub(1)? * w
        } else if end >= mark + w {
            mark
        } else {
            return None;
        };
        Some(Flush {
            mark: start + w,
            start,
            retire: start.checked_sub(self.lag * w),
        })
    }
}

/// One window's disk work, done by the write-behind thread.
pub(super) struct FlushJob {
    pub(super) file: Arc<PooledFile>,
    pub(super) start: u64,
    pub(super) window: u64,
    pub(super) retire: Option<u64>,
    /// When the WRITE that completed the window queued it.
    pub(super) queued: Instant,
}

/// Windows that may wait for the write-behind thread before WRITEs are
/// paced: a short burst goes at page-cache speed.
pub(super) const PACE_FREE: usize = 4;
/// How fast the present disk-rate estimate follows the disk: a sample
/// moves it by the share of this its interval covers. Long enough that one
/// slow window does not slow every WRITE, short enough to follow a disk
/// whose rate wanders (this VM's: 0.6–2 GB/s over minutes).
pub(super) const RATE_SMOOTHING: Duration = Duration::from_secs(1);
/// The same for the disk's long-run rate, which WRITEs are paced to while
/// the queue has room: a spell of slow disk shorter than this is taken in
/// by the queue instead of slowing frames.
pub(super) const RATE_MEMORY: Duration = Duration::from_secs(10);
/// The share of the queue (past [`PACE_FREE`]) that pacing steers it
/// towards: WRITEs go a little faster than the disk below it and a little
/// slower above, so the room above stays free for the next slow spell.
pub(super) const PACE_SETTLE: f64 = 0.25;
/// How strongly: the rate changes by this share of the disk's per unit of
/// queue share away from [`PACE_SETTLE`].
pub(super) const PACE_GAIN: f64 = 0.5;
/// Pacing never goes below this share of the disk's present rate; a full
/// queue still makes WRITEs wait outright.
pub(super) const PACE_FLOOR: f64 = 0.1;
/// The share of the queue, at its top, over which pacing slows from the
/// disk's present rate to [`PACE_FLOOR`] of it.
pub(super) const PACE_SLOWING: f64 = 0.25;

/// Why pace: when a stream comes in faster than the disk drains it, the
/// write-behind queue fills and then every WRITE waits for the disk. The
/// disk's rate wanders (spells of writeback at half speed, stalls of
/// 20–40 ms), so those waits land in bursts: most frames at page-cache
/// speed, some held for a whole stall — the tail of frame times an editor
/// sees as dropped frames. Completing WRITEs at the disk's long-run rate
/// instead keeps the queue low, with room left to take in a slow spell at
/// full speed. Measured with aja (16 GiB, frames not overlapping a stall
/// of the VM itself, see `crate::tools::stalls`): p99 frame write 13.1 and 13.6 ms
/// unpaced (a 4-window queue, as before pacing), 6.4 and 7.8 ms paced at
/// the present rate with this queue of 128; pacing at the long-run rate
/// (three alternating pairs) 16.8 / 6.6 / 6.9 ms against 13.7 / 8.8 / 8.9
/// at the present rate, frames over 9.82 ms 263 / 7 / 1 against 286 / 15
/// / 18 (the first pair: a disk below 1 GB/s throughout).
#[derive(Default)]
pub(super) struct Pacer {
    /// The disk's drain rate in bytes/s as the write-behind thread
    /// measured it while windows were queued, over [`RATE_SMOOTHING`]; 0
    /// until measured.
    pub(super) present_rate: AtomicU64,
    /// The same over [`RATE_MEMORY`].
    pub(super) long_rate: AtomicU64,
    /// When the last paced byte is due.
    pub(super) clock: parking_lot::Mutex<Option<Instant>>,
    /// Total time WRITEs were held back, in nanoseconds.
    pub(super) paced_ns: AtomicU64,
}

impl Pacer {
    /// The write-behind thread took `took` for a `bytes` window while more
    /// were waiting: one sample of the disk's rate.
    pub(super) fn disk_drained(&self, bytes: u64, took: Duration) {
        let sample = bytes as f64 / took.as_secs_f64().max(1e-6);
        for (estimate, over) in [
            (&self.present_rate, RATE_SMOOTHING),
            (&self.long_rate, RATE_MEMORY),
        ] {
            let old = estimate.load(Ordering::Relaxed) as f64;
            estimate.store(
                blend_rate(old, sample, took, over) as u64,
                Ordering::Relaxed,
            );
        }
    }

    /// How long a WRITE of `len` bytes waits, with `waiting` windows of a
    /// `backlog` queued for the disk; None when it goes at once.
    pub(super) fn pace(
        &self,
        len: u64,
        waiting: usize,
        backlog: usize,
        now: Instant,
    ) -> Option<Duration> {
        let disk = DiskRate {
            present: self.present_rate.load(Ordering::Relaxed) as f64,
            long_run: self.long_rate.load(Ordering::Relaxed) as f64,
        };
        let rate = paced_rate(disk, waiting, backlog)?;
        let mut clock = self.clock.lock();
        let (due, wait) = reserve(*clock, now, len, rate);
        *clock = Some(due);
        drop(clock);
        self.paced_ns
            .fetch_add(wait.as_nanos() as u64, Ordering::Relaxed);
        Some(wait)
    }
}

/// The disk-rate estimate after a new sample measured over `dt`, smoothed
/// `over` that long.
pub(super) fn blend_rate(old: f64, sample: f64, dt: Duration, over: Duration) -> f64 {
    if old <= 0.0 {
        return sample;
    }
    let share = (dt.as_secs_f64() / over.as_secs_f64()).min(1.0);
    old + (sample - old) * share
}

/// The disk's drain rate in bytes/s, two ways.
#[derive(Debug, Clone, Copy)]
pub(super) struct DiskRate {
    /// Over the last second or so ([`RATE_SMOOTHING`]).
    pub(super) present: f64,
    /// Over [`RATE_MEMORY`].
    pub(super) long_run: f64,
}

/// The rate WRITEs may complete at with `waiting` of `backlog` windows
/// queued for the disk: unpaced up to [`PACE_FREE`]; then about the disk's
/// rate — the faster of its present and long-run rates, so a slow spell
/// fills the queue rather than slowing frames — steered to keep the queue
/// near [`PACE_SETTLE`]; and once the queue's last [`PACE_SLOWING`] share
/// is reached, falling towards [`PACE_FLOOR`] of the present rate. None: no
/// pacing (disk rate not measured yet, or a queue too short to pace in).
pub(super) fn paced_rate(disk: DiskRate, waiting: usize, backlog: usize) -> Option<f64> {
    if disk.present <= 0.0 || waiting <= PACE_FREE || backlog <= PACE_FREE {
        return None;
    }
    let fill = ((waiting - PACE_FREE) as f64 / (backlog - PACE_FREE) as f64).min(1.0);
    let steady = disk.present.max(disk.long_run) * (1.0 + PACE_GAIN * (PACE_SETTLE - fill));
    if fill <= 1.0 - PACE_SLOWING {
        return Some(steady);
    }
    let running_out = disk.present * ((1.0 - fill) / PACE_SLOWING).max(PACE_FLOOR);
    Some(steady.min(running_out))
}

/// Reserves `len` bytes at `rate` bytes/s on the pacing clock: the new
/// clock (when those bytes are due) and how long a WRITE finishing `now`
/// waits for them. Concurrent WRITEs reserve one after another, so
/// together they complete at `rate`; a clock in the past restarts at now.
pub(super) fn reserve(
    clock: Option<Instant>,
    now: Instant,
    len: u64,
    rate: f64,
) -> (Instant, Duration) {
    let start = clock.map_or(now, |c| c.max(now));
    let due = start + Duration::from_secs_f64(len as f64 / rate);
    (due, due - now)
}

/// The write-behind thread's state: it sends windows to disk, measures
/// the disk's pace for the [`Pacer`] as it goes, and drops the windows of
/// removed files.
pub(super) struct WriteBehindWorker {
    pub(super) pacer: Arc<Pacer>,
    pub(super) skipped: Arc<AtomicU64>,
    pub(super) closer: Option<crossbeam_channel::Sender<Closing>>,
    /// When the last window sent was done.
    pub(super) last_done: Option<Instant>,
}

impl WriteBehindWorker {
    /// Does one window's write-behind; false when the window was dropped.
    /// Errors are logged, never returned: the data is already written and
    /// COMMIT's fdatasync reports what the disk refuses.
    pub(super) fn run(&mut self, job: FlushJob) -> bool {
        let sent = !job.file.removed.load(Ordering::Relaxed);
        if sent {
            if let Err(e) = flush_window(&job.file.file, job.start, job.window, job.retire) {
                tracing::debug!(error = %e, start = job.start, "write-behind failed");
            }
            let done = Instant::now();
            // Queued before the previous window was done: the thread went
            // from one to the next, so the time between them is what the
            // disk took for this one. (A dropped window in between takes
            // no time worth counting.)
            if let Some(last) = self.last_done.filter(|l| job.queued < *l) {
                self.pacer.disk_drained(job.window, done - last);
            }
            self.last_done = Some(done);
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
        release(self.closer.as_ref(), job.file);
        sent
    }
}

#[cfg(target_os = "linux")]
pub(super) fn flush_window(
    f: &File,
    start: u64,
    window: u64,
    retire: Option<u64>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: sync_file_range and posix_fadvise only read their integer
    // arguments; the descriptor is open for the call's duration.
    unsafe {
        check(libc::sync_file_range(
            fd,
            start as i64,
            window as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        ))?;
        if let Some(old) = retire {
            check(libc::sync_file_range(
                fd,
                old as i64,
                window as i64,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            ))?;
            // Pages still dirty (a late concurrent WRITE) are not dropped.
            let r = libc::posix_fadvise(fd, old as i64, window as i64, libc::POSIX_FADV_DONTNEED);
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
        }
    }
    Ok(())
}

/// macOS has no sync_file_range: its unified buffer cache is left to pace
/// the writer.
#[cfg(not(target_os = "linux"))]
pub(super) fn flush_window(
    _f: &File,
    _start: u64,
    _window: u64,
    _retire: Option<u64>,
) -> io::Result<()> {
    Ok(())
}
