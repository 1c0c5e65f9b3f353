//! Content files on local disk: a bounded pool of open descriptors shared by
//! every connection, positional reads into pooled buffers, write-behind and
//! read-ahead for streams, and the statistics NFS reports about the volume.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::sync::Cache;

mod direct;
mod entries;
mod sync;

pub use entries::{NewEntries, SPARE_FOLDER};
pub use sync::FileSync;

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
        }
    }

    /// Creates a new, empty content file (failing if it exists); its
    /// folder entry is made durable by the first COMMIT of it, or when the
    /// catalog's journal starts over (see [`NewEntries`]).
    pub fn create_content(&self, path: &Path) -> io::Result<File> {
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
    /// (shutdown: the queue is the last of the server's unwritten data).
    pub fn drain(&self) {
        self.pending.drain();
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

    /// Removes the content file at `path` (node `fileid`): its name at
    /// once, its blocks in the background. Freeing a big file's blocks is
    /// slow — on this disk, mounted with `discard`, unlinking a 4 GiB file
    /// took 4.2 s, all of it TRIM — and a client waits for its REMOVE
    /// (Finder deleting a 16 GiB render would hang for ~17 s). So the file
    /// is held open across the unlink, which then only drops the name, and
    /// the closer thread's close frees the blocks.
    pub fn remove_content(&self, fileid: u64, path: &Path) -> io::Result<()> {
        let pooled = self.take_removed(fileid);
        // Recycled as a spare when nothing holds it (an RPC's write landing
        // after it was emptied would show in another file) and it is small.
        let unheld = pooled.as_ref().is_none_or(|f| Arc::strong_count(f) == 1);
        if unheld
            && std::fs::symlink_metadata(path)
                .is_ok_and(|m| m.is_file() && m.len() <= entries::RECYCLE_MAX_BYTES)
            && self.entries.recycle(path)
        {
            return Ok(());
        }
        let held = match pooled {
            Some(f) => Some(Closing::Pooled(f)),
            // Not pooled: a descriptor of our own (none if it cannot be
            // opened; the unlink then frees the blocks itself).
            None => File::open(path).ok().map(Closing::Unlinked),
        };
        let unlinked = std::fs::remove_file(path);
        if let Some(held) = held {
            close_in_background(self.closer.as_ref(), held);
        }
        unlinked
    }

    /// Write-behind windows dropped because their file was removed (for
    /// the operator).
    pub fn skipped_windows(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

/// Writes an aligned payload with O_DIRECT in the file's turn; without a
/// direct descriptor, or on a file system that refuses (EINVAL), it gets
/// a buffered write.
fn write_direct_now(
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
struct DirectJob {
    file: Arc<PooledFile>,
    offset: u64,
    buf: AlignedBuf,
    len: usize,
}

impl DirectJob {
    fn write(&self, written: &AtomicU64) -> io::Result<()> {
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
    fn write_here(self, aligned: &AlignedPool, written: &AtomicU64) -> io::Result<()> {
        let result = self.write(written);
        aligned.give(self.buf);
        result
    }

    /// The direct-writer thread's work: writes the payload (not when its
    /// file was removed meanwhile: that content is going away), then lets
    /// waiters for its range go on.
    fn run(
        self,
        aligned: &AlignedPool,
        pending: &direct::Pending,
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

fn open_read_write(path: &Path) -> io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    advise_sequential(&f);
    Ok(f)
}

/// The content file opened again with O_DIRECT; None where the file
/// system or the system refuses it.
#[cfg(target_os = "linux")]
fn open_direct(path: &Path, writable: bool) -> Option<File> {
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
fn open_direct(_path: &Path, _writable: bool) -> Option<File> {
    None
}

/// Whether no page of `[offset, offset + len)` is in the page cache (so
/// a READ of it would go to disk anyway). False when unsure: `cachestat`
/// needs Linux 6.5, and without it every READ stays buffered.
fn not_cached(file: &File, offset: u64, len: usize) -> bool {
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
fn pages_cached(file: &File, offset: u64, len: u64) -> io::Result<u64> {
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
fn pages_cached(_file: &File, _offset: u64, _len: u64) -> io::Result<u64> {
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
const DIRECT_MIN: usize = 512 << 10;

/// O_DIRECT's alignment of offsets, lengths and memory (the logical block
/// size of common disks is 512 or 4096).
const DIRECT_ALIGN: usize = 4096;
/// Size of the aligned buffers: the largest payload spliced.
const ALIGNED_BUF: usize = 1 << 20;
/// Direct payloads in flight on one streaming connection beside its queue
/// (the Linux client and aja keep 16 WRITEs in flight).
const DIRECT_IN_FLIGHT: usize = 16;
/// Aligned buffers kept for reuse: one per READ or WRITE in flight on a
/// busy connection (plus one per place in the direct-writer's queue).
const ALIGNED_KEPT: usize = 64;

/// Aligned buffers for reuse: fresh memory costs page faults (and, on a
/// VM, the host's), a reused buffer none.
struct AlignedPool {
    free: parking_lot::Mutex<Vec<AlignedBuf>>,
    /// Buffers kept for reuse at most.
    keep: usize,
}

impl Default for AlignedPool {
    fn default() -> Self {
        AlignedPool::keeping(ALIGNED_KEPT)
    }
}

impl AlignedPool {
    fn keeping(keep: usize) -> AlignedPool {
        AlignedPool {
            free: Default::default(),
            keep,
        }
    }

    fn take(&self) -> AlignedBuf {
        self.free.lock().pop().unwrap_or_else(AlignedBuf::new)
    }

    /// Fills the pool with `count` buffers whose pages are backed: a
    /// direct-writer queue growing for the first time during a stream
    /// otherwise page-faults fresh memory (on this VM, memory the host
    /// must back again: ~3 ms a MiB) in the middle of frames — 25–30 ms
    /// frames at the first spell of slow disk.
    fn prefill(&self, count: usize) {
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

    fn give(&self, buf: AlignedBuf) {
        let mut free = self.free.lock();
        if free.len() < self.keep {
            free.push(buf);
        }
    }
}

/// A direct READ's bytes: the first `len` of an aligned buffer, which
/// goes back to its pool when the reply has been sent.
struct AlignedBytes {
    buf: Option<AlignedBuf>,
    len: usize,
    pool: Arc<AlignedPool>,
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
struct AlignedBuf(std::ptr::NonNull<u8>);

// SAFETY: the buffer is owned memory with no thread affinity.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn layout() -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(ALIGNED_BUF, DIRECT_ALIGN).expect("valid layout")
    }

    fn new() -> AlignedBuf {
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
struct Flush {
    /// The write-behind mark after this flush.
    mark: u64,
    /// Start writeback of `[start, start + window)`.
    start: u64,
    /// Wait for `[retire, retire + window)` and drop it from the cache.
    retire: Option<u64>,
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
    fn plan(&self, mark: u64, end: u64) -> Option<Flush> {
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
struct FlushJob {
    file: Arc<PooledFile>,
    start: u64,
    window: u64,
    retire: Option<u64>,
    /// When the WRITE that completed the window queued it.
    queued: Instant,
}

/// Windows that may wait for the write-behind thread before WRITEs are
/// paced: a short burst goes at page-cache speed.
const PACE_FREE: usize = 4;
/// How fast the present disk-rate estimate follows the disk: a sample
/// moves it by the share of this its interval covers. Long enough that one
/// slow window does not slow every WRITE, short enough to follow a disk
/// whose rate wanders (this VM's: 0.6–2 GB/s over minutes).
const RATE_SMOOTHING: Duration = Duration::from_secs(1);
/// The same for the disk's long-run rate, which WRITEs are paced to while
/// the queue has room: a spell of slow disk shorter than this is taken in
/// by the queue instead of slowing frames.
const RATE_MEMORY: Duration = Duration::from_secs(10);
/// The share of the queue (past [`PACE_FREE`]) that pacing steers it
/// towards: WRITEs go a little faster than the disk below it and a little
/// slower above, so the room above stays free for the next slow spell.
const PACE_SETTLE: f64 = 0.25;
/// How strongly: the rate changes by this share of the disk's per unit of
/// queue share away from [`PACE_SETTLE`].
const PACE_GAIN: f64 = 0.5;
/// Pacing never goes below this share of the disk's present rate; a full
/// queue still makes WRITEs wait outright.
const PACE_FLOOR: f64 = 0.1;
/// The share of the queue, at its top, over which pacing slows from the
/// disk's present rate to [`PACE_FLOOR`] of it.
const PACE_SLOWING: f64 = 0.25;

/// Why pace: when a stream comes in faster than the disk drains it, the
/// write-behind queue fills and then every WRITE waits for the disk. The
/// disk's rate wanders (spells of writeback at half speed, stalls of
/// 20–40 ms), so those waits land in bursts: most frames at page-cache
/// speed, some held for a whole stall — the tail of frame times an editor
/// sees as dropped frames. Completing WRITEs at the disk's long-run rate
/// instead keeps the queue low, with room left to take in a slow spell at
/// full speed. Measured with aja (16 GiB, frames not overlapping a stall
/// of the VM itself, see `crate::stalls`): p99 frame write 13.1 and 13.6 ms
/// unpaced (a 4-window queue, as before pacing), 6.4 and 7.8 ms paced at
/// the present rate with this queue of 128; pacing at the long-run rate
/// (three alternating pairs) 16.8 / 6.6 / 6.9 ms against 13.7 / 8.8 / 8.9
/// at the present rate, frames over 9.82 ms 263 / 7 / 1 against 286 / 15
/// / 18 (the first pair: a disk below 1 GB/s throughout).
#[derive(Default)]
struct Pacer {
    /// The disk's drain rate in bytes/s as the write-behind thread
    /// measured it while windows were queued, over [`RATE_SMOOTHING`]; 0
    /// until measured.
    present_rate: AtomicU64,
    /// The same over [`RATE_MEMORY`].
    long_rate: AtomicU64,
    /// When the last paced byte is due.
    clock: parking_lot::Mutex<Option<Instant>>,
    /// Total time WRITEs were held back, in nanoseconds.
    paced_ns: AtomicU64,
}

impl Pacer {
    /// The write-behind thread took `took` for a `bytes` window while more
    /// were waiting: one sample of the disk's rate.
    fn disk_drained(&self, bytes: u64, took: Duration) {
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
    fn pace(&self, len: u64, waiting: usize, backlog: usize, now: Instant) -> Option<Duration> {
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
fn blend_rate(old: f64, sample: f64, dt: Duration, over: Duration) -> f64 {
    if old <= 0.0 {
        return sample;
    }
    let share = (dt.as_secs_f64() / over.as_secs_f64()).min(1.0);
    old + (sample - old) * share
}

/// The disk's drain rate in bytes/s, two ways.
#[derive(Debug, Clone, Copy)]
struct DiskRate {
    /// Over the last second or so ([`RATE_SMOOTHING`]).
    present: f64,
    /// Over [`RATE_MEMORY`].
    long_run: f64,
}

/// The rate WRITEs may complete at with `waiting` of `backlog` windows
/// queued for the disk: unpaced up to [`PACE_FREE`]; then about the disk's
/// rate — the faster of its present and long-run rates, so a slow spell
/// fills the queue rather than slowing frames — steered to keep the queue
/// near [`PACE_SETTLE`]; and once the queue's last [`PACE_SLOWING`] share
/// is reached, falling towards [`PACE_FLOOR`] of the present rate. None: no
/// pacing (disk rate not measured yet, or a queue too short to pace in).
fn paced_rate(disk: DiskRate, waiting: usize, backlog: usize) -> Option<f64> {
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
fn reserve(clock: Option<Instant>, now: Instant, len: u64, rate: f64) -> (Instant, Duration) {
    let start = clock.map_or(now, |c| c.max(now));
    let due = start + Duration::from_secs_f64(len as f64 / rate);
    (due, due - now)
}

/// Read-ahead windows queued for the read-ahead thread; more are dropped.
const PREFETCH_QUEUE: usize = 8;

/// The write-behind thread's state: it sends windows to disk, measures
/// the disk's pace for the [`Pacer`] as it goes, and drops the windows of
/// removed files.
struct WriteBehindWorker {
    pacer: Arc<Pacer>,
    skipped: Arc<AtomicU64>,
    closer: Option<crossbeam_channel::Sender<Closing>>,
    /// When the last window sent was done.
    last_done: Option<Instant>,
}

impl WriteBehindWorker {
    /// Does one window's write-behind; false when the window was dropped.
    /// Errors are logged, never returned: the data is already written and
    /// COMMIT's fdatasync reports what the disk refuses.
    fn run(&mut self, job: FlushJob) -> bool {
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

/// Drops a disk thread's reference to `file`, handing it to the closer
/// thread when it is the last: the last close of a removed file frees its
/// blocks, and with the `discard` mount option that is a synchronous TRIM
/// (70–75 ms per 256 MiB here) that must not hold up other files' disk work.
fn release(closer: Option<&crossbeam_channel::Sender<Closing>>, file: Arc<PooledFile>) {
    if Arc::strong_count(&file) == 1 {
        close_in_background(closer, Closing::Pooled(file));
    }
}

/// Queues `held` for the closer thread; with its queue full (or no closer)
/// it is closed here after all.
fn close_in_background(closer: Option<&crossbeam_channel::Sender<Closing>>, held: Closing) {
    if let Some(closer) = closer {
        let _ = closer.try_send(held);
    }
}

/// What the closer thread closes: descriptors whose close frees a removed
/// file's blocks.
enum Closing {
    /// A pooled file's last reference.
    Pooled(Arc<PooledFile>),
    /// A descriptor held across its file's unlink, so that the unlink only
    /// dropped the name.
    Unlinked(File),
}

impl Closing {
    /// Closes the descriptor. A pooled file that RPCs still hold (a READ or
    /// WRITE of a file being removed) is kept until they let go, for up to
    /// [`CLOSER_PATIENCE`]: whoever drops the last reference pays for
    /// freeing the blocks, and that should be this thread, not an RPC's.
    fn close(self) {
        match self {
            Closing::Pooled(file) => {
                let since = Instant::now();
                while Arc::strong_count(&file) > 1 && since.elapsed() < CLOSER_PATIENCE {
                    std::thread::sleep(Duration::from_millis(1));
                }
                drop(file)
            }
            Closing::Unlinked(file) => drop(file),
        }
    }
}

/// How long the closer waits for RPCs to let go of a removed file.
const CLOSER_PATIENCE: Duration = Duration::from_secs(2);

/// Last references queued for the closer thread; beyond that the disk
/// thread closes the file itself.
const CLOSER_QUEUE: usize = 256;

/// A thread that runs disk work beside the RPC path, fed through a bounded
/// queue; it ends when the queue's sender is dropped.
fn spawn_disk_thread<J: Send + 'static>(
    name: &str,
    queue: usize,
    mut run: impl FnMut(J) + Send + 'static,
) -> io::Result<crossbeam_channel::Sender<J>> {
    let (jobs, rx) = crossbeam_channel::bounded::<J>(queue);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || rx.into_iter().for_each(&mut run))?;
    Ok(jobs)
}

/// One read-ahead window, requested by the read-ahead thread.
struct PrefetchJob {
    file: Arc<PooledFile>,
    start: u64,
    len: u64,
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
    fn plan(&self, mark: u64, end: u64) -> Option<u64> {
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
    fn claim(&self, file: &PooledFile, end: u64) -> Option<u64> {
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
fn prefetch(f: &File, start: u64, len: u64) {
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
fn prefetch(_f: &File, _start: u64, _len: u64) {}

#[cfg(target_os = "linux")]
fn flush_window(f: &File, start: u64, window: u64, retire: Option<u64>) -> io::Result<()> {
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
fn flush_window(_f: &File, _start: u64, _window: u64, _retire: Option<u64>) -> io::Result<()> {
    Ok(())
}

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

/// Read buffers kept for reuse: enough for every READ in flight on a few
/// busy connections (64 × 1 MiB at most).
const READ_BUFFERS_KEPT: usize = 64;

/// Buffers for READ data. A fresh 1 MiB `Vec` per READ costs an allocation
/// that the allocator zero-fills (or maps and faults in page by page); a
/// reused one is already resident.
#[derive(Debug)]
struct BufferPool {
    free: parking_lot::Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl BufferPool {
    fn new(keep: usize) -> BufferPool {
        BufferPool {
            free: parking_lot::Mutex::new(Vec::new()),
            keep,
        }
    }

    /// A buffer of `len` bytes whose content is left over from earlier use.
    fn take(self: &Arc<Self>, len: usize) -> PooledBuf {
        let mut buf = self.free.lock().pop().unwrap_or_default();
        // Only growth writes zeros: a reused buffer keeps its bytes.
        buf.resize(len, 0);
        PooledBuf {
            buf,
            pool: self.clone(),
        }
    }
}

/// A buffer that returns to its pool when dropped.
#[derive(Debug)]
struct PooledBuf {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl std::ops::Deref for PooledBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl std::ops::DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock();
        if free.len() < self.pool.keep {
            free.push(std::mem::take(&mut self.buf));
        }
    }
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

    /// Cold data goes disk → aligned buffer, byte-exact, short at end of
    /// file; cached data, unaligned offsets and small READs go through the
    /// page cache. On the real disk (target/), not /tmp: a tmpfs keeps its
    /// pages in the cache whatever it is told.
    #[cfg(target_os = "linux")]
    #[test]
    fn cold_reads_go_direct_and_cached_reads_through_the_cache() {
        if !direct_reads_supported() {
            eprintln!("skipped: no cachestat before Linux 6.5, so no direct reads");
            return;
        }
        let scratch = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&scratch).unwrap();
        let dir = tempfile::tempdir_in(&scratch).unwrap();
        let p = dir.path().join("master.mov");
        let len = (3 << 20) + 1000;
        let want: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        {
            let mut f = File::create(&p).unwrap();
            f.write_all(&want).unwrap();
            f.sync_data().unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: posix_fadvise only reads its integer arguments.
            let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(r, 0, "could not drop the file from the page cache");
        }
        let pool = FilePool::new(4, WriteBehind::OFF, ReadAhead::OFF).with_direct_reads(true);
        let f = pool.get(9, &p).unwrap();
        let mb = 1 << 20;
        let (data, eof) = pool.read_at(&f, 0, mb).unwrap();
        assert!(data[..] == want[..mb] && !eof, "first MiB differs");
        assert_eq!(
            pool.direct_read(),
            1,
            "a cold aligned MiB went through the cache"
        );
        // The last block is partial: the READ is short, at end of file.
        let (data, eof) = pool.read_at(&f, 3 << 20, mb).unwrap();
        assert!(data[..] == want[3 << 20..] && eof, "tail differs");
        assert_eq!(
            pool.direct_read(),
            2,
            "the cold tail went through the cache"
        );
        // Unaligned, or small: through the cache.
        let (data, _) = pool.read_at(&f, mb as u64 + 1, 200 << 10).unwrap();
        assert!(
            data[..] == want[mb + 1..mb + 1 + (200 << 10)],
            "unaligned READ differs"
        );
        let (data, _) = pool.read_at(&f, 2 << 20, 64 << 10).unwrap();
        assert!(
            data[..] == want[2 << 20..(2 << 20) + (64 << 10)],
            "small READ differs"
        );
        assert_eq!(
            pool.direct_read(),
            2,
            "an unaligned or small READ went direct"
        );
        // Cached (here: dirty, just written) data is read through the
        // cache, so it reads what was written.
        let new = vec![0xa5u8; mb];
        pool.write_at(&f, 2 << 20, &new).unwrap();
        let (data, _) = pool.read_at(&f, 2 << 20, mb).unwrap();
        assert!(data[..] == new[..], "a READ missed the WRITE before it");
        assert_eq!(pool.direct_read(), 2, "cached data was read direct");
    }

    #[test]
    fn a_removed_files_windows_are_dropped_and_its_last_reference_handed_to_the_closer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::File::create(&p).unwrap();
        let pool = FilePool::new(4, WriteBehind::OFF, ReadAhead::OFF);
        let f = pool.get(3, &p).unwrap();
        pool.write_at(&f, 0, &[7u8; 8192]).unwrap();
        let (closer, closing) = crossbeam_channel::bounded(4);
        let mut worker = WriteBehindWorker {
            pacer: Arc::new(Pacer::default()),
            skipped: Arc::new(AtomicU64::new(0)),
            closer: Some(closer),
            last_done: None,
        };
        let window = |file: &Arc<PooledFile>, start: u64| FlushJob {
            file: file.clone(),
            start,
            window: 4096,
            retire: start.checked_sub(4096),
            queued: Instant::now(),
        };
        // A live file's window goes to disk; the pool still holds the file.
        assert!(worker.run(window(&f, 0)));
        assert!(closing.is_empty());
        // Removed: the next window (queued while the first was under way,
        // so it would count as a disk-rate sample) is dropped, unmeasured.
        let next = window(&f, 4096);
        pool.forget(3);
        let last = Arc::downgrade(&f);
        drop(f);
        assert!(!worker.run(next));
        assert_eq!(worker.skipped.load(Ordering::Relaxed), 1);
        assert_eq!(worker.pacer.present_rate.load(Ordering::Relaxed), 0);
        // The job held the last reference: the closer has it now.
        let Ok(Closing::Pooled(handed)) = closing.try_recv() else {
            panic!("last reference not handed over");
        };
        assert!(handed.removed.load(Ordering::Relaxed));
        drop(handed);
        assert!(
            last.upgrade().is_none(),
            "closed once the closer dropped it"
        );
    }

    #[test]
    fn removed_content_loses_its_name_at_once_and_its_descriptor_on_the_closer() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::new(4, WriteBehind::OFF, ReadAhead::OFF);
        // One file in the pool, one not: both names go at once.
        let pooled = dir.path().join("pooled");
        std::fs::write(&pooled, b"frames").unwrap();
        // This reference stands for an RPC still using the file.
        let f = pool.get(1, &pooled).unwrap();
        let last = Arc::downgrade(&f);
        pool.remove_content(1, &pooled).unwrap();
        assert!(!pooled.exists());
        // The closer keeps its reference while the RPC holds one, so the
        // RPC's drop is not the close that frees the blocks.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(Arc::strong_count(&f), 2, "the closer let go first");
        drop(f);
        let other = dir.path().join("other");
        std::fs::write(&other, b"frames").unwrap();
        pool.remove_content(2, &other).unwrap();
        assert!(!other.exists());
        // The pooled descriptor is closed by the closer thread, soon.
        let t = Instant::now();
        while last.upgrade().is_some() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "descriptor never closed"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Removing what is gone already says so, and the pool goes on.
        let gone = pool.remove_content(2, &other).unwrap_err();
        assert_eq!(gone.kind(), io::ErrorKind::NotFound);
    }

    /// An aligned buffer holding `len` bytes of `byte`.
    #[cfg(target_os = "linux")]
    fn aligned_with(pool: &FilePool, byte: u8, len: usize) -> AlignedBuf {
        let mut buf = pool.aligned.take();
        buf.as_mut()[..len].fill(byte);
        buf
    }

    /// Direct WRITEs answered before they reach the disk: the WRITE
    /// returns while the disk is held up (here: the file's turn, taken by
    /// the test, which the direct-writer needs), and a READ or a buffered
    /// WRITE of those bytes, a size change and COMMIT wait for them —
    /// each sees the payloads in the order they arrived.
    #[cfg(target_os = "linux")]
    #[test]
    fn queued_direct_writes_are_answered_at_once_and_waited_for_by_what_touches_them() {
        let scratch = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&scratch).unwrap();
        let dir = tempfile::tempdir_in(&scratch).unwrap();
        let p = dir.path().join("render.mov");
        File::create(&p).unwrap();
        let pool = Arc::new(
            FilePool::new(4, WriteBehind::OFF, ReadAhead::OFF).with_direct_writes(true, 0, 4),
        );
        let f = pool.get_writable(9, &p).unwrap();
        pool.write_at(&f, 0, &vec![0x11; 3 << 20]).unwrap();
        let mb = 1usize << 20;
        // On a thread of its own, so a call that waited for the disk fails
        // the test instead of hanging it; the receiver hears when it ends.
        type Work = Box<dyn FnOnce(&FilePool, &Arc<PooledFile>) + Send>;
        let run = |work: Work| {
            let (pool, f) = (pool.clone(), f.clone());
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                work(&pool, &f);
                tx.send(()).unwrap();
            });
            rx
        };
        let turn = f.serial.lock();
        let queued = run(Box::new(move |pool, f| {
            pool.write_aligned(f, 0, aligned_with(pool, 0x22, mb), mb)
                .unwrap();
            pool.write_aligned(f, mb as u64, aligned_with(pool, 0x33, mb), mb)
                .unwrap();
        }));
        queued
            .recv_timeout(Duration::from_secs(5))
            .expect("direct WRITEs waited for the disk instead of being queued");
        assert_eq!(pool.direct_queued(), 2);
        // Bytes past the queued ones are read at once.
        let (tail, _) = pool.read_at(&f, 2 << 20, 4096).unwrap();
        assert!(tail.iter().all(|&b| b == 0x11));
        let (got_tx, got_rx) = std::sync::mpsc::channel();
        let reader = run(Box::new(move |pool, f| {
            got_tx
                .send(pool.read_at(f, (mb - 4096) as u64, 8192).unwrap().0)
                .unwrap();
        }));
        let overwrite = run(Box::new(move |pool, f| {
            pool.write_at(f, (mb + 4096) as u64, &[0x44; 4096]).unwrap()
        }));
        assert!(
            reader.recv_timeout(Duration::from_millis(100)).is_err(),
            "a READ of queued bytes did not wait for them"
        );
        assert!(
            overwrite.recv_timeout(Duration::from_millis(10)).is_err(),
            "a buffered WRITE over queued bytes did not wait for them"
        );
        drop(turn);
        reader
            .recv_timeout(Duration::from_secs(5))
            .expect("READ never woke");
        overwrite
            .recv_timeout(Duration::from_secs(5))
            .expect("WRITE never woke");
        let got = got_rx.recv().unwrap();
        assert!(
            got[..4096].iter().all(|&b| b == 0x22),
            "first payload not read back"
        );
        assert!(
            got[4096..].iter().all(|&b| b == 0x33),
            "second payload not read back"
        );
        // A size change waits for what is queued: the payload must not
        // grow the file again after it.
        let turn = f.serial.lock();
        let grow = run(Box::new(move |pool, f| {
            pool.write_aligned(f, 4 << 20, aligned_with(pool, 0x55, mb), mb)
                .unwrap()
        }));
        grow.recv_timeout(Duration::from_secs(5)).unwrap();
        let truncate = run(Box::new(move |pool, f| pool.set_len(f, 3 << 20).unwrap()));
        assert!(
            truncate.recv_timeout(Duration::from_millis(50)).is_err(),
            "a size change did not wait for the queue"
        );
        drop(turn);
        truncate
            .recv_timeout(Duration::from_secs(5))
            .expect("size change never woke");
        pool.sync(&f).unwrap();
        assert_eq!(pool.direct_queued(), 0);
        let disk = std::fs::read(&p).unwrap();
        assert_eq!(
            disk.len(),
            3 << 20,
            "a queued payload grew the file after its truncate"
        );
        assert!(disk[..mb].iter().all(|&b| b == 0x22));
        assert!(disk[mb..mb + 4096].iter().all(|&b| b == 0x33));
        assert!(
            disk[mb + 4096..mb + 8192].iter().all(|&b| b == 0x44),
            "the later buffered WRITE lost to the earlier payload"
        );
        assert!(disk[mb + 8192..2 * mb].iter().all(|&b| b == 0x33));
        assert!(disk[2 * mb..].iter().all(|&b| b == 0x11));
    }

    /// A queued payload that fails on its way to disk (here: a descriptor
    /// that cannot write) is reported by the file's next COMMIT, once.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_queued_payload_that_fails_is_reported_by_commit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        File::create(&p).unwrap();
        let pool =
            FilePool::new(4, WriteBehind::OFF, ReadAhead::OFF).with_direct_writes(true, 0, 4);
        let read_only = PooledFile {
            file: File::open(&p).unwrap(),
            fileid: 5,
            writable: true,
            behind: AtomicU64::new(0),
            ahead: AtomicU64::new(0),
            serial: parking_lot::Mutex::new(()),
            direct_path: Some(p.clone()),
            direct: std::sync::OnceLock::from(Some(File::open(&p).unwrap())),
            removed: AtomicBool::new(false),
            folder: None,
        };
        let f = Arc::new(read_only);
        pool.write_aligned(&f, 0, aligned_with(&pool, 1, 4096), 4096)
            .expect("the WRITE is answered before the disk is tried");
        let err = pool
            .sync(&f)
            .expect_err("COMMIT did not report the failed payload");
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        pool.sync(&f).expect("reported twice");
        assert_eq!(pool.direct_written(), 0);
    }

    #[test]
    fn pool_reuses_descriptors_and_reads_short_at_eof() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::File::create(&p)
            .unwrap()
            .write_all(b"0123456789")
            .unwrap();
        let pool = FilePool::new(4, WriteBehind::OFF, ReadAhead::OFF);
        let f = pool.get(7, &p).unwrap();
        let (data, eof) = pool.read_at(&f, 2, 4).unwrap();
        assert_eq!((&data[..], eof), (&b"2345"[..], false));
        drop(data);
        // The buffer is reused (it still holds "2345"), and a short read
        // shows only the bytes read.
        let f = pool.get(7, &p).unwrap();
        let (data, eof) = pool.read_at(&f, 8, 4).unwrap();
        assert_eq!((&data[..], eof), (&b"89"[..], true));
        assert_eq!(pool.read_buffers.free.lock().len(), 0);
        drop(data);
        assert_eq!(pool.read_buffers.free.lock().len(), 1);
        assert_eq!(pool.opens(), 1);
        assert!(pool.get(8, &dir.path().join("missing")).is_err());
        assert!(volume_stats(dir.path()).unwrap().bytes_total > 0);
    }

    #[test]
    fn write_behind_follows_a_stream_and_restarts_after_a_seek() {
        let wb = WriteBehind {
            window: 8,
            lag: 2,
            backlog: 4,
        };
        // Nothing until a whole window is written.
        assert_eq!(wb.plan(0, 7), None);
        let f = wb.plan(0, 8).unwrap();
        assert_eq!((f.mark, f.start, f.retire), (8, 0, None));
        assert_eq!(wb.plan(8, 15), None);
        // Windows lag*window back are retired.
        let f = wb.plan(16, 24).unwrap();
        assert_eq!((f.mark, f.start, f.retire), (24, 16, Some(0)));
        // A write far ahead restarts at the window that holds its end.
        let f = wb.plan(24, 1000).unwrap();
        assert_eq!((f.mark, f.start, f.retire), (1000, 992, Some(976)));
        // So does a rewrite from the start.
        assert_eq!(wb.plan(1000, 5), None);
        let f = wb.plan(1000, 9).unwrap();
        assert_eq!((f.mark, f.start, f.retire), (8, 0, None));
        assert_eq!(WriteBehind::OFF.plan(0, 1 << 30), None);
    }

    #[test]
    fn pacing_starts_past_the_free_windows_and_slows_as_the_queue_fills() {
        let gb = 1e9;
        let steady = DiskRate {
            present: gb,
            long_run: gb,
        };
        // Unmeasured disk, short queue, or too few windows waiting: no pacing.
        let unmeasured = DiskRate {
            present: 0.0,
            long_run: gb,
        };
        assert_eq!(paced_rate(unmeasured, 40, 64), None);
        assert_eq!(paced_rate(steady, 40, PACE_FREE), None);
        assert_eq!(paced_rate(steady, PACE_FREE, 64), None);
        // Just past the free windows, a little faster than the disk; at the
        // settling point (a quarter of the 60 windows past the free ones)
        // the disk's rate; above it, slower.
        let near = |got: Option<f64>, want: f64| (got.unwrap() - want).abs() < 1.0;
        let eager = 1.0 + PACE_GAIN * (PACE_SETTLE - 1.0 / 60.0);
        assert!(near(paced_rate(steady, PACE_FREE + 1, 64), eager * gb));
        assert!(near(paced_rate(steady, PACE_FREE + 15, 64), gb));
        assert!(near(paced_rate(steady, PACE_FREE + 45, 64), 0.75 * gb));
        // In the top quarter, towards the floor: 8 of the 15 windows left,
        // 8/15 of the rate; full or over: the floor.
        assert!(near(paced_rate(steady, 56, 64), 8.0 / 15.0 * gb));
        assert!(near(paced_rate(steady, 64, 64), PACE_FLOOR * gb));
        assert!(near(paced_rate(steady, 90, 64), PACE_FLOOR * gb));
        // Monotonic in between.
        let rates: Vec<f64> = (5..=64)
            .map(|w| paced_rate(steady, w, 64).unwrap())
            .collect();
        assert!(rates.windows(2).all(|r| r[1] <= r[0]));
        // A slow spell (present rate half the long-run one) with room in the
        // queue: still the long-run rate, so the queue takes the spell in.
        let spell = DiskRate {
            present: 0.5 * gb,
            long_run: gb,
        };
        assert!(near(paced_rate(spell, PACE_FREE + 15, 64), gb));
        // But once it runs out of room, the present rate governs.
        assert!(near(paced_rate(spell, 64, 64), PACE_FLOOR * 0.5 * gb));
        // A disk faster than it was: its present rate.
        let faster = DiskRate {
            present: 2.0 * gb,
            long_run: gb,
        };
        assert!(near(paced_rate(faster, PACE_FREE + 15, 64), 2.0 * gb));
    }

    #[test]
    fn paced_writes_reserve_one_after_another_at_the_rate() {
        let now = Instant::now();
        let mib = 1u64 << 20;
        // 1 MiB at 1 MiB/s: due in a second.
        let (due, wait) = reserve(None, now, mib, mib as f64);
        assert_eq!(wait, Duration::from_secs(1));
        // A second WRITE finishing at the same time queues behind it.
        let (due2, wait2) = reserve(Some(due), now, mib, mib as f64);
        assert_eq!(wait2, Duration::from_secs(2));
        assert_eq!(due2, due + Duration::from_secs(1));
        // A clock left in the past restarts at now: no credit for idle time.
        let later = now + Duration::from_secs(10);
        let (due3, wait3) = reserve(Some(due2), later, mib / 2, mib as f64);
        assert_eq!(wait3, Duration::from_millis(500));
        assert_eq!(due3, later + Duration::from_millis(500));
    }

    #[test]
    fn disk_rate_estimate_follows_samples_smoothly() {
        // The first sample is taken as is.
        let ms = Duration::from_millis;
        assert_eq!(blend_rate(0.0, 800.0, ms(10), RATE_SMOOTHING), 800.0);
        // A 10 ms sample moves a 1 s estimate 1 % of the way.
        let r = blend_rate(1000.0, 500.0, ms(10), Duration::from_secs(1));
        assert!((r - 995.0).abs() < 1e-9, "{r}");
        // A sample as long as the smoothing replaces it.
        assert_eq!(blend_rate(1000.0, 500.0, ms(2000), ms(1000)), 500.0);
        let p = Pacer::default();
        p.disk_drained(8 << 20, Duration::from_millis(8));
        let measured = p.present_rate.load(Ordering::Relaxed) as f64;
        assert!((measured - 1.048576e9).abs() < 1e3, "{measured}");
        // Paced only once windows queue up.
        let now = Instant::now();
        assert_eq!(p.pace(1 << 20, PACE_FREE, 64, now), None);
        // At the settling point: the disk's rate, 1 MiB a millisecond.
        let wait = p.pace(1 << 20, PACE_FREE + 15, 64, now).unwrap();
        assert!(wait > Duration::from_micros(950) && wait < Duration::from_micros(1050));
        assert_eq!(p.paced_ns.load(Ordering::Relaxed), wait.as_nanos() as u64);
    }

    #[test]
    fn pool_writes_stream_through_write_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stream");
        std::fs::File::create(&p).unwrap();
        let pool = FilePool::new(
            4,
            WriteBehind {
                window: 64 << 10,
                lag: 1,
                backlog: 4,
            },
            ReadAhead {
                window: 64 << 10,
                windows: 2,
            },
        );
        let f = pool.get(1, &p).unwrap();
        let chunk: Vec<u8> = (0..32u32 << 10).map(|i| (i % 251) as u8).collect();
        for k in 0..16u64 {
            pool.write_at(&f, k * chunk.len() as u64, &chunk).unwrap();
        }
        assert_eq!(f.behind.load(Ordering::Relaxed), 512 << 10);
        let back = std::fs::read(&p).unwrap();
        assert_eq!(back.len(), 16 * chunk.len());
        assert!(back.chunks(chunk.len()).all(|c| c == chunk));
        // Reading the stream back keeps two windows requested ahead.
        let (data, _) = pool.read_at(&f, 0, chunk.len()).unwrap();
        assert_eq!(&data[..], &chunk[..]);
        assert_eq!(f.ahead.load(Ordering::Relaxed), 64 << 10);
        let (data, _) = pool.read_at(&f, 32 << 10, chunk.len()).unwrap();
        assert_eq!(&data[..], &chunk[..]);
        assert_eq!(f.ahead.load(Ordering::Relaxed), 128 << 10);
    }

    #[test]
    fn read_ahead_stays_ahead_and_restarts_after_a_seek() {
        let ra = ReadAhead {
            window: 8,
            windows: 2,
        };
        // From the start: windows up to 2 ahead of the reader's end.
        assert_eq!(ra.plan(0, 4), Some(0));
        assert_eq!(ra.plan(8, 4), Some(8));
        assert_eq!(ra.plan(16, 4), Some(16));
        assert_eq!(ra.plan(24, 4), None);
        assert_eq!(ra.plan(24, 12), Some(24));
        // A seek forward or back restarts at the reader's end.
        assert_eq!(ra.plan(24, 1000), Some(1000));
        assert_eq!(ra.plan(1008, 3), Some(3));
        assert_eq!(ReadAhead::OFF.plan(0, 10), None);
    }
}
