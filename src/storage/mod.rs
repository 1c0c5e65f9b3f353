//! Content files on local disk, as the NFS layers use them: `FilePool`, a
//! bounded pool of open descriptors shared by every connection, and the
//! READ, WRITE, sync and remove paths through it. It decides which path a
//! call takes; the files beside it do the work of each:
//! - `aligned`: O_DIRECT, page-cache residency, aligned buffers;
//! - `direct`: the direct-writer queue (WRITEs answered before the disk);
//! - `write_behind`: streaming windows sent to disk, pacing to its rate;
//! - `read_ahead`: prefetch windows for streaming READs;
//! - `buffers`: reusable READ buffers;
//! - `closer`: disk threads and the closer of removed files;
//! - `sync`: FILE_SYNC writes as `storage.file_sync` asks;
//! - `entries`: spare files and new files' folder entries;
//! - `removal`: removed nodes' content files, after the reply;
//! - `volume`: statvfs figures and the storage folder.
//!
//! Only this file's `FilePool` and the re-exported settings and figures are
//! seen outside storage.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::sync::Cache;

mod aligned;
mod buffers;
mod closer;
mod direct;
mod entries;
mod read_ahead;
mod removal;
mod sync;
mod volume;
mod write_behind;

use aligned::{
    not_cached, open_direct, AlignedBuf, AlignedBytes, AlignedPool, ALIGNED_BUF, ALIGNED_KEPT,
    DIRECT_ALIGN, DIRECT_IN_FLIGHT, DIRECT_MIN,
};
use buffers::{BufferPool, READ_BUFFERS_KEPT};
use closer::{release, spawn_disk_thread, Closing, CLOSER_QUEUE};
use direct::DirectJob;
use read_ahead::{prefetch, PrefetchJob, PREFETCH_QUEUE};
use write_behind::{FlushJob, Pacer, WriteBehindWorker};

pub use aligned::direct_reads_supported;
pub use entries::{NewEntries, SPARE_FOLDER};
pub use read_ahead::ReadAhead;
pub use sync::FileSync;
pub use volume::{ensure_storage_dir, volume_stats, VolumeStats};
pub use write_behind::WriteBehind;

/// An open content file in the pool.
#[derive(Debug)]
pub struct PooledFile {
    pub file: File,
    /// The node's fileid: what queued direct writes are tracked by.
    fileid: u64,
    pub writable: bool,
    /// Write-behind mark: where the next window to send to disk starts.
    behind: AtomicU64,
    /// Read-ahead mark: where the next window to prefetch starts.
    ahead: AtomicU64,
    /// WRITEs of one file take turns here. The kernel lets only one write
    /// into a file at a time anyway (the inode lock), and waiters there
    /// spin on a CPU while the holder copies a megabyte — a core the
    /// client and the socket need (5.8 % of all CPU in the profile of
    /// 16 WRITEs in flight). Waiters here sleep.
    serial: parking_lot::Mutex<()>,
    /// Where the file is, for opening it again with O_DIRECT; None when
    /// direct I/O is off for it (direct reads off, and direct writes off
    /// or the file read-only).
    direct_path: Option<std::path::PathBuf>,
    /// The same file opened with O_DIRECT (read-write when `writable`), on
    /// the first READ or WRITE that may go direct (None inside when the
    /// file system refuses): only files streamed past `direct_after` or
    /// read cold hold a second descriptor.
    direct: std::sync::OnceLock<Option<File>>,
    /// Its node was removed: the write-behind windows still queued for it
    /// are dropped (COMMIT, not write-behind, is what makes data durable,
    /// and this data is going away).
    removed: AtomicBool,
    /// The folder holding the file (its entry is synced before its data).
    folder: Option<PathBuf>,
}

impl PooledFile {
    /// Holds this file's turn: WRITEs of it wait until the guard is
    /// dropped. For tests that need WRITEs held in flight, and tools.
    pub fn hold_writes(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.serial.lock()
    }

    /// The O_DIRECT descriptor, opened on first use; None when direct
    /// writes are off for this file or its file system refuses them.
    fn direct_file(&self) -> Option<&File> {
        let path = self.direct_path.as_deref()?;
        self.direct
            .get_or_init(|| open_direct(path, self.writable))
            .as_ref()
    }
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
    opens: AtomicU64,
    lookups: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    write_behind: WriteBehind,
    /// The write-behind thread's queue; None when write-behind is off (or
    /// its thread could not start). Starting writeback of a window and
    /// waiting for an old one take 5–15 ms each on this disk: done inside
    /// the WRITE they landed in frame times. On their own thread they run
    /// beside the stream, and a WRITE waits only when the queue is full,
    /// i.e. when the disk is really behind.
    flusher: Option<crossbeam_channel::Sender<FlushJob>>,
    /// Paces WRITEs to the disk's rate while windows queue up for it.
    pacer: Arc<Pacer>,
    /// Write-behind windows dropped because their file was removed.
    skipped: Arc<AtomicU64>,
    /// The closer thread's queue (see [`Closing`]).
    closer: Option<crossbeam_channel::Sender<Closing>>,
    read_ahead: ReadAhead,
    /// The read-ahead thread's queue: WILLNEED starts reads but can take
    /// milliseconds to submit them, which a READ should not wait for.
    prefetcher: Option<crossbeam_channel::Sender<PrefetchJob>>,
    read_buffers: Arc<BufferPool>,
    /// Direct writes: aligned spliced payloads at or past this offset go
    /// to disk with O_DIRECT; None when off.
    direct_after: Option<u64>,
    /// Payloads written with O_DIRECT (for tests and the operator).
    direct_written: Arc<AtomicU64>,
    /// The direct-writer thread's queue (see [`direct`]); None when direct
    /// WRITEs are answered only once on disk (`storage.direct_queue = 0`).
    direct_queue: Option<crossbeam_channel::Sender<DirectJob>>,
    /// Direct payloads answered and not yet on disk, by file.
    pending: Arc<direct::Pending>,
    /// Direct reads: READs of data not in the page cache go to disk with
    /// O_DIRECT (see [`FilePool::with_direct_reads`]).
    direct_reads: bool,
    /// READs served with O_DIRECT (for tests and the operator).
    direct_read: AtomicU64,
    /// Buffers for O_DIRECT, shared by direct WRITEs and direct READs.
    aligned: Arc<AlignedPool>,
    /// How FILE_SYNC WRITEs reach stable storage (`storage.file_sync`).
    file_sync: FileSync,
    /// Folders of content files created and not yet synced.
    entries: Arc<NewEntries>,
    /// The remover thread's queue, started on first use (after the spare
    /// files are set up: it recycles into them).
    remover: std::sync::OnceLock<Option<crossbeam_channel::Sender<removal::Job>>>,
}

impl FilePool {
    pub fn new(capacity: u64, write_behind: WriteBehind, read_ahead: ReadAhead) -> FilePool {
        let pacer = Arc::new(Pacer::default());
        let skipped = Arc::new(AtomicU64::new(0));
        let closer = spawn_disk_thread("closer", CLOSER_QUEUE, Closing::close)
            .map_err(|e| tracing::error!(error = %e, "closer thread did not start"))
            .ok();
        let flusher = if write_behind.window > 0 {
            let mut worker = WriteBehindWorker {
                pacer: pacer.clone(),
                skipped: skipped.clone(),
                closer: closer.clone(),
                last_done: None,
            };
            spawn_disk_thread(
                "write-behind",
                write_behind.backlog.max(1) as usize,
                move |job: FlushJob| {
                    worker.run(job);
                },
            )
            .map_err(|e| tracing::error!(error = %e, "write-behind thread did not start: off"))
            .ok()
        } else {
            None
        };
        let prefetcher = if read_ahead.window > 0 {
            let closer = closer.clone();
            spawn_disk_thread("read-ahead", PREFETCH_QUEUE, move |job: PrefetchJob| {
                if !job.file.removed.load(Ordering::Relaxed) {
                    prefetch(&job.file.file, job.start, job.len);
                }
                release(closer.as_ref(), job.file);
            })
            .map_err(|e| tracing::error!(error = %e, "read-ahead thread did not start: off"))
            .ok()
        } else {
            None
        };
        FilePool {
            files: Cache::new(capacity.max(1)),
            opens: Default::default(),
            lookups: Default::default(),
            bytes_read: Default::default(),
            bytes_written: Default::default(),
            write_behind,
            flusher,
            pacer,
            skipped,
            closer,
            read_ahead,
            prefetcher,
            read_buffers: Arc::new(BufferPool::new(READ_BUFFERS_KEPT)),
            direct_after: None,
            direct_written: Default::default(),
            direct_queue: None,
            pending: Default::default(),
            direct_reads: false,
            direct_read: AtomicU64::new(0),
            aligned: Default::default(),
            file_sync: FileSync::default(),
            entries: Default::default(),
            remover: Default::default(),
        }
    }

    /// Creates a new, empty content file (failing if it exists); its
    /// folder entry is made durable by the first COMMIT of it, or when the
    /// catalog's journal starts over (see [`NewEntries`]).
    pub fn create_content(&self, path: &Path) -> io::Result<()> {
        self.entries.create_content(path)
    }

    /// Keeps `keep` empty files ready under `storage` for creates (see
    /// [`NewEntries`]; Linux).
    pub fn with_spare_files(mut self, storage: &Path, keep: usize) -> FilePool {
        self.entries = Arc::new(NewEntries::with_spares(storage, keep));
        self
    }

    /// The folders of new content files, for the catalog to sync before
    /// its journal forgets their creates.
    pub fn new_entries(&self) -> Arc<NewEntries> {
        self.entries.clone()
    }

    /// Turns O_DIRECT writes of aligned spliced payloads on (Linux) for
    /// the part of each file at or past `after` bytes: a file's first
    /// bytes stay buffered, so a copy shorter than that goes at page-cache
    /// speed and only a long stream waits on the disk itself.
    ///
    /// With `queue` > 0, up to that many such payloads are answered before
    /// they reach the disk and written behind the reply by the
    /// direct-writer thread (see [`direct`]).
    pub fn with_direct_writes(mut self, on: bool, after: u64, queue: usize) -> FilePool {
        self.direct_after = (on && cfg!(target_os = "linux")).then_some(after);
        if self.direct_after.is_some() && queue > 0 {
            self.aligned = Arc::new(AlignedPool::keeping(ALIGNED_KEPT + queue));
            let aligned = self.aligned.clone();
            let _ = std::thread::Builder::new()
                .name("aligned-prefill".into())
                .spawn(move || aligned.prefill(queue + DIRECT_IN_FLIGHT));
            let aligned = self.aligned.clone();
            let pending = self.pending.clone();
            let written = self.direct_written.clone();
            let closer = self.closer.clone();
            self.direct_queue = spawn_disk_thread("direct-writer", queue, move |job: DirectJob| {
                job.run(&aligned, &pending, &written, closer.as_ref())
            })
            .map_err(|e| {
                tracing::error!(error = %e, "direct-writer thread did not start: direct WRITEs wait for the disk")
            })
            .ok();
        }
        self
    }

    /// Makes FILE_SYNC WRITEs durable as `mode` says.
    pub fn with_file_sync(mut self, mode: FileSync) -> FilePool {
        self.file_sync = mode;
        self
    }

    /// A FILE_SYNC (or DATA_SYNC) WRITE: `data` at `offset`, on stable
    /// storage as `storage.file_sync` says before it returns. It waits for
    /// queued direct payloads over these bytes only, and does not take the
    /// file's turn: with the default range sync the kernel holds the inode
    /// lock just for the copy and syncs after it, and an UNSTABLE stream
    /// into the same file must not wait for this WRITE's flush.
    pub fn write_stable(&self, file: &Arc<PooledFile>, offset: u64, data: &[u8]) -> io::Result<()> {
        self.pending
            .wait_range(file.fileid, offset, offset + data.len() as u64);
        self.sync_entry(file)?;
        self.file_sync.write(&file.file, offset, data)?;
        self.after_write(file, offset, data.len() as u64);
        Ok(())
    }

    /// Direct payloads answered and queued for disk right now.
    pub fn direct_queued(&self) -> usize {
        self.pending.queued()
    }

    /// Waits until every direct payload answered so far is on disk
    /// (shutdown: the queue is the last of the server's unwritten data),
    /// and removed nodes' content files are gone.
    pub fn drain(&self) {
        self.pending.drain();
        if let Some(Some(remover)) = self.remover.get() {
            removal::drain(remover, Duration::from_secs(30));
        }
    }

    /// Puts everything written to `file` on stable storage (COMMIT, and
    /// WRITEs with FILE_SYNC4/DATA_SYNC4): its queued direct payloads, then
    /// fdatasync. Fails with the error a queued payload met on its way to
    /// disk after its WRITE was answered.
    pub fn sync(&self, file: &PooledFile) -> io::Result<()> {
        self.pending.settle(file.fileid)?;
        self.sync_entry(file)?;
        sync_data(&file.file)
    }

    /// The file's name in its folder, durable before its data is.
    fn sync_entry(&self, file: &PooledFile) -> io::Result<()> {
        match &file.folder {
            Some(dir) => self.entries.sync_dir(dir),
            None => Ok(()),
        }
    }

    /// Sets the file's size once its queued direct payloads are on disk
    /// (one landing after a truncate would grow the file again).
    pub fn set_len(&self, file: &PooledFile, size: u64) -> io::Result<()> {
        self.pending.wait_file(file.fileid);
        file.file.set_len(size)
    }

    /// Payloads written with O_DIRECT since start.
    pub fn direct_written(&self) -> u64 {
        self.direct_written.load(Ordering::Relaxed)
    }

    /// Turns O_DIRECT reads of cold data on (Linux 6.5 and later, where
    /// `cachestat` tells whether a range is in the page cache). A READ of
    /// 512 KiB or more at an aligned offset whose range has no page in the
    /// cache is read straight into an aligned buffer; anything cached,
    /// dirty or unaligned goes through the page cache as before. Playing a
    /// long master back from disk then never fills the page cache: on a
    /// VM whose host backs guest memory lazily, filling it ran at a
    /// quarter of the disk's speed.
    pub fn with_direct_reads(mut self, on: bool) -> FilePool {
        self.direct_reads = on && cfg!(target_os = "linux");
        self
    }

    /// READs served with O_DIRECT since start.
    pub fn direct_read(&self) -> u64 {
        self.direct_read.load(Ordering::Relaxed)
    }

    /// Reads up to `count` bytes at `offset` into a pooled buffer (it goes
    /// back to the pool when the returned bytes are dropped, i.e. once the
    /// reply is on the socket); short only at end of file. Returns the
    /// bytes and whether the end of file was reached.
    pub fn read_at(
        &self,
        file: &Arc<PooledFile>,
        offset: u64,
        count: usize,
    ) -> io::Result<(Bytes, bool)> {
        let read = self.read_uncounted(file, offset, count)?;
        self.bytes_read
            .fetch_add(read.0.len() as u64, Ordering::Relaxed);
        Ok(read)
    }

    fn read_uncounted(
        &self,
        file: &Arc<PooledFile>,
        offset: u64,
        count: usize,
    ) -> io::Result<(Bytes, bool)> {
        // Bytes answered and still queued for disk are read once there.
        self.pending
            .wait_range(file.fileid, offset, offset.saturating_add(count as u64));
        if self.direct_reads
            && offset.is_multiple_of(DIRECT_ALIGN as u64)
            && (DIRECT_MIN..=ALIGNED_BUF).contains(&count)
            && not_cached(&file.file, offset, count)
        {
            if let Some(direct) = file.direct_file() {
                if let Some(read) = self.read_direct(file, direct, offset, count)? {
                    return Ok(read);
                }
            }
        }
        if let Some(prefetcher) = &self.prefetcher {
            if let Some(start) = self.read_ahead.claim(file, offset + count as u64) {
                // A full queue means the disk is busy reading ahead already.
                let _ = prefetcher.try_send(PrefetchJob {
                    file: file.clone(),
                    start,
                    len: self.read_ahead.window,
                });
            }
        }
        let mut buf = self.read_buffers.take(count);
        let got = read_into(file, offset, &mut buf)?;
        buf.truncate(got);
        Ok((Bytes::from_owner(buf), got < count))
    }

    /// A cold READ: disk → aligned buffer with O_DIRECT, the reply's bytes
    /// being that buffer (back to the pool once sent). No read-ahead is
    /// asked for: it would fill the page cache this path keeps out of, and
    /// the client's READs in flight keep the disk busy. None when the file
    /// system refuses this alignment (the READ then goes buffered).
    fn read_direct(
        &self,
        file: &PooledFile,
        direct: &File,
        offset: u64,
        count: usize,
    ) -> io::Result<Option<(Bytes, bool)>> {
        let mut buf = self.aligned.take();
        // Whole blocks: the bytes past `count` are read and not sent.
        let want = count.next_multiple_of(DIRECT_ALIGN);
        let data = &mut buf.as_mut()[..want];
        let mut got = 0;
        while got < want {
            match direct.read_at(&mut data[got..], offset + got as u64) {
                Ok(0) => break,
                // Short of a block boundary only at end of file.
                Ok(n) if !(got + n).is_multiple_of(DIRECT_ALIGN) => {
                    got += n;
                    got += read_into(&file.file, offset + got as u64, &mut data[got..])?;
                    break;
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if got == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                    self.aligned.give(buf);
                    return Ok(None);
                }
                Err(e) => {
                    self.aligned.give(buf);
                    return Err(e);
                }
            }
        }
        self.direct_read.fetch_add(1, Ordering::Relaxed);
        let len = got.min(count);
        let bytes = Bytes::from_owner(AlignedBytes {
            buf: Some(buf),
            len,
            pool: self.aligned.clone(),
        });
        Ok(Some((bytes, got < count)))
    }

    /// The open file for `fileid`, opening `path` on a miss (read-write
    /// when permitted, so a later WRITE needs no reopen).
    pub fn get(&self, fileid: u64, path: &Path) -> io::Result<Arc<PooledFile>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = self.files.get(&fileid) {
            return Ok(f);
        }
        let (file, writable) = match open_read_write(path) {
            Ok(file) => (file, true),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => (open_for_read(path)?, false),
            Err(e) => return Err(e),
        };
        let pooled = PooledFile {
            file,
            fileid,
            writable,
            behind: AtomicU64::new(0),
            ahead: AtomicU64::new(0),
            serial: parking_lot::Mutex::new(()),
            direct_path: (self.direct_reads || (writable && self.direct_after.is_some()))
                .then(|| path.to_path_buf()),
            direct: std::sync::OnceLock::new(),
            removed: AtomicBool::new(false),
            folder: path.parent().map(Path::to_path_buf),
        };
        self.opens.fetch_add(1, Ordering::Relaxed);
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
        self.opens.load(Ordering::Relaxed)
    }

    /// Descriptors asked of the pool since start (less [`FilePool::opens`]:
    /// the pool's hits).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// File bytes READs have returned and WRITEs have taken since start.
    pub fn traffic(&self) -> (u64, u64) {
        (
            self.bytes_read.load(Ordering::Relaxed),
            self.bytes_written.load(Ordering::Relaxed),
        )
    }

    /// Write-behind windows queued for the disk now.
    pub fn write_behind_queued(&self) -> usize {
        self.flusher.as_ref().map_or(0, |f| f.len())
    }

    /// Writes all of `data` at `offset`, then lets write-behind send the
    /// windows this write completed to disk.
    pub fn write_at(&self, file: &Arc<PooledFile>, offset: u64, data: &[u8]) -> io::Result<()> {
        // After the direct payloads queued over these bytes.
        self.pending
            .wait_range(file.fileid, offset, offset + data.len() as u64);
        {
            let _turn = file.serial.lock();
            file.write_all_at(data, offset)?;
        }
        self.after_write(file, offset, data.len() as u64);
        Ok(())
    }

    /// Writes the `len` bytes queued in `pipes` (in order) at `offset`: the
    /// WRITE payloads the transport spliced from the socket. One copy,
    /// pipe to page cache.
    pub fn write_from_pipes(
        &self,
        file: &Arc<PooledFile>,
        offset: u64,
        pipes: &[crate::pipe::Pipe],
        len: usize,
    ) -> io::Result<()> {
        let may_go_direct = self.direct_after.is_some_and(|after| offset >= after)
            && offset.is_multiple_of(DIRECT_ALIGN as u64)
            && len.is_multiple_of(DIRECT_ALIGN)
            && (DIRECT_MIN..=ALIGNED_BUF).contains(&len);
        if may_go_direct && file.direct_file().is_some() {
            return self.write_direct(file, offset, pipes, len);
        }
        self.pending
            .wait_range(file.fileid, offset, offset + len as u64);
        {
            let _turn = file.serial.lock();
            let mut at = offset;
            for pipe in pipes {
                let n = pipe.queued()?;
                pipe.write_to(file, at, n)?;
                at += n as u64;
            }
            if at - offset != len as u64 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("pipes held {} of {len} payload bytes", at - offset),
                ));
            }
        }
        self.after_write(file, offset, len as u64);
        Ok(())
    }

    /// An aligned payload: pipes → aligned buffer (the one copy, outside
    /// the file's turn, so it overlaps the previous WRITE's disk time) →
    /// O_DIRECT, here or, with a direct-writer queue, behind the reply.
    fn write_direct(
        &self,
        file: &Arc<PooledFile>,
        offset: u64,
        pipes: &[crate::pipe::Pipe],
        len: usize,
    ) -> io::Result<()> {
        let mut buf = self.aligned.take();
        let data = &mut buf.as_mut()[..len];
        let mut got = 0;
        for pipe in pipes {
            let n = pipe.queued()?;
            if got + n > len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("pipes hold more than the {len} payload bytes"),
                ));
            }
            pipe.read_exact(&mut data[got..got + n])?;
            got += n;
        }
        if got != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("pipes held {got} of {len} payload bytes"),
            ));
        }
        self.write_aligned(file, offset, buf, len)
    }

    /// Writes the first `len` bytes of `buf` at `offset` with O_DIRECT:
    /// queued for the direct-writer thread and answered at once when there
    /// is one, else here.
    fn write_aligned(
        &self,
        file: &Arc<PooledFile>,
        offset: u64,
        buf: AlignedBuf,
        len: usize,
    ) -> io::Result<()> {
        let job = DirectJob {
            file: file.clone(),
            offset,
            buf,
            len,
        };
        match &self.direct_queue {
            Some(queue) => {
                // Queued before the reply, so a READ after it waits for it.
                self.pending.queue(file.fileid, offset, len);
                // A full queue holds this WRITE (and its connection's lane)
                // until the disk has taken a payload: the disk's pace.
                if let Err(crossbeam_channel::SendError(job)) = queue.send(job) {
                    // The thread is gone: written here, then waiters go on.
                    let written = job.write_here(&self.aligned, &self.direct_written);
                    self.pending.landed(file.fileid, offset, Ok(()));
                    written?;
                }
            }
            None => job.write_here(&self.aligned, &self.direct_written)?,
        }
        self.after_write(file, offset, len as u64);
        Ok(())
    }

    /// Hands the windows a write of `len` bytes at `offset` completed to
    /// the write-behind thread (waiting when its queue is full), then paces
    /// the write when the disk is behind.
    fn after_write(&self, file: &Arc<PooledFile>, offset: u64, len: u64) {
        self.bytes_written.fetch_add(len, Ordering::Relaxed);
        let Some(flusher) = &self.flusher else {
            return;
        };
        let mark = file.behind.load(Ordering::Relaxed);
        if let Some(flush) = self.write_behind.plan(mark, offset + len) {
            // Concurrent WRITEs of one file: one of them takes each window.
            if file
                .behind
                .compare_exchange(mark, flush.mark, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                let _ = flusher.send(FlushJob {
                    file: file.clone(),
                    start: flush.start,
                    window: self.write_behind.window,
                    retire: flush.retire,
                    queued: Instant::now(),
                });
            }
        }
        let backlog = self.write_behind.backlog as usize;
        if let Some(wait) = self.pacer.pace(len, flusher.len(), backlog, Instant::now()) {
            std::thread::sleep(wait);
        }
    }

    /// Time WRITEs spent paced since start (for the operator).
    pub fn paced(&self) -> Duration {
        Duration::from_nanos(self.pacer.paced_ns.load(Ordering::Relaxed))
    }

    /// Lets go of a removed node's file that a client still holds open
    /// (its unlink waits for the CLOSE, then [`FilePool::remove_content`]):
    /// its write-behind windows still queued are dropped — the write-behind
    /// thread used to go on sending a removed 256 MiB file to disk — and
    /// the next WRITE through the client's open gets a fresh descriptor.
    pub fn forget(&self, fileid: u64) {
        drop(self.take_removed(fileid));
    }

    /// Takes a removed node's file out of the pool, marked removed. The
    /// cache's pending work is run at once: moka otherwise keeps a removed
    /// value until its next housekeeping, and the last close of an
    /// unlinked file is what frees its blocks — left to chance, a 256 MiB
    /// file's blocks were freed (and discarded) inside some later WRITE,
    /// halving the next stream's throughput.
    fn take_removed(&self, fileid: u64) -> Option<Arc<PooledFile>> {
        let pooled = self.files.remove(&fileid);
        if let Some(f) = &pooled {
            f.removed.store(true, Ordering::Relaxed);
        }
        self.files.run_pending_tasks();
        pooled
    }

    /// Removes the content file at `path` (node `fileid`) now (see
    /// [`removal`]).
    pub fn remove_content(&self, fileid: u64, path: &Path) -> io::Result<()> {
        let r = removal::Removal::of(path, self.take_removed(fileid));
        removal::remove_now(&self.entries, self.closer.as_ref(), r)
    }

    /// [`FilePool::remove_content`] on the remover thread, once the caller
    /// has answered (failures are logged there).
    pub fn remove_content_later(&self, fileid: u64, path: &Path) {
        let r = removal::Removal::of(path, self.take_removed(fileid));
        let remover = self
            .remover
            .get_or_init(|| removal::spawn_remover(self.entries.clone(), self.closer.clone()));
        if let Some(r) = removal::queue(remover.as_ref(), r) {
            let done = removal::remove_now(&self.entries, self.closer.as_ref(), r);
            removal::report(path, done);
        }
    }

    /// Write-behind windows dropped because their file was removed (for
    /// the operator).
    pub fn skipped_windows(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
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

/// Puts the file's data (and the size needed to read it back) on stable
/// storage: fdatasync on Linux; on macOS std's sync_data issues
/// F_FULLFSYNC, which also flushes the drive's cache.
fn sync_data(file: &File) -> io::Result<()> {
    file.sync_data()
}

/// Fills `buf` from `offset`; returns how many bytes were read (fewer
/// only at end of file).
fn read_into(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests;
