//! Disk threads beside the RPC path (`spawn_disk_thread`) and the closer
//! thread: the last close of a removed file frees its blocks (a
//! synchronous TRIM with `discard`), so it is handed to a thread of its
//! own instead of holding up an RPC or another file's disk work.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::PooledFile;

/// Drops a disk thread's reference to `file`, handing it to the closer
/// thread when it is the last: the last close of a removed file frees its
/// blocks, and with the `discard` mount option that is a synchronous TRIM
/// (70–75 ms per 256 MiB here) that must not hold up other files' disk work.
pub(super) fn release(closer: Option<&crossbeam_channel::Sender<Closing>>, file: Arc<PooledFile>) {
    if Arc::strong_count(&file) == 1 {
        close_in_background(closer, Closing::Pooled(file));
    }
}

/// Queues `held` for the closer thread; with its queue full (or no closer)
/// it is closed here after all.
pub(super) fn close_in_background(
    closer: Option<&crossbeam_channel::Sender<Closing>>,
    held: Closing,
) {
    if let Some(closer) = closer {
        let _ = closer.try_send(held);
    }
}

/// What the closer thread closes: descriptors whose close frees a removed
/// file's blocks.
pub(super) enum Closing {
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
    pub(super) fn close(self) {
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
pub(super) const CLOSER_PATIENCE: Duration = Duration::from_secs(2);

/// Last references queued for the closer thread; beyond that the disk
/// thread closes the file itself.
pub(super) const CLOSER_QUEUE: usize = 256;

/// A thread that runs disk work beside the RPC path, fed through a bounded
/// queue; it ends when the queue's sender is dropped.
pub(super) fn spawn_disk_thread<J: Send + 'static>(
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
