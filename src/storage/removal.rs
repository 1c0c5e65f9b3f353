//! Removing a removed node's content file. Its blocks are always freed in
//! the background: freeing a big file's blocks is slow — on this disk,
//! mounted with `discard`, unlinking a 4 GiB file took 4.2 s, all of it
//! TRIM — and a client waits for its REMOVE (Finder deleting a 16 GiB
//! render would hang for ~17 s). So the file is held open across the
//! unlink, which then only drops the name, and the closer thread's close
//! frees the blocks. A small file nothing holds is recycled as a spare
//! instead (see [`NewEntries`]).
//!
//! The name itself goes on the remover thread after the reply: the
//! catalog's journal already says the node is gone, and the stat and
//! rename (or unlink) were ~67 µs of a one-at-a-time remove's ~545 µs. A
//! crash before the remover gets to it leaves an orphan content file,
//! which start-up reports (as it does one whose recycling rename was
//! lost), never a node without its content.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::closer::{close_in_background, spawn_disk_thread, Closing};
use super::entries::{self, NewEntries};
use super::PooledFile;

/// Removals queued for the remover thread; past that a remove does it
/// before its reply.
const REMOVER_QUEUE: usize = 1024;

/// A content file to remove, with the pool's descriptor of it if it had
/// one.
pub(super) struct Removal {
    pub path: PathBuf,
    pub pooled: Option<Arc<PooledFile>>,
}

impl Removal {
    pub fn of(path: &Path, pooled: Option<Arc<PooledFile>>) -> Removal {
        Removal {
            path: path.to_path_buf(),
            pooled,
        }
    }
}

/// Removes the file's name now (recycling it if it may), its blocks on
/// the closer thread.
pub(super) fn remove_now(
    entries: &NewEntries,
    closer: Option<&crossbeam_channel::Sender<Closing>>,
    r: Removal,
) -> io::Result<()> {
    let Removal { path, pooled } = r;
    // Recycled as a spare when nothing holds it (an RPC's write landing
    // after it was emptied would show in another file) and it is small.
    let unheld = pooled.as_ref().is_none_or(|f| Arc::strong_count(f) == 1);
    if unheld
        && std::fs::symlink_metadata(&path)
            .is_ok_and(|m| m.is_file() && m.len() <= entries::RECYCLE_MAX_BYTES)
        && entries.recycle(&path)
    {
        return Ok(());
    }
    let held = match pooled {
        Some(f) => Some(Closing::Pooled(f)),
        // Not pooled: a descriptor of our own (none if it cannot be
        // opened; the unlink then frees the blocks itself).
        None => File::open(&path).ok().map(Closing::Unlinked),
    };
    let unlinked = std::fs::remove_file(&path);
    if let Some(held) = held {
        close_in_background(closer, held);
    }
    unlinked
}

/// Logs a removal that failed (a file already gone is no failure).
pub(super) fn report(path: &Path, result: io::Result<()>) {
    if let Err(e) = result {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove content file");
        }
    }
}

/// What the remover thread is given.
pub(super) enum Job {
    Remove(Removal),
    /// Answered once every removal queued before it is done.
    Drained(crossbeam_channel::Sender<()>),
}

/// Starts the remover thread.
pub(super) fn spawn_remover(
    entries: Arc<NewEntries>,
    closer: Option<crossbeam_channel::Sender<Closing>>,
) -> Option<crossbeam_channel::Sender<Job>> {
    spawn_disk_thread(
        "content-remover",
        REMOVER_QUEUE,
        move |job: Job| match job {
            Job::Remove(r) => {
                let path = r.path.clone();
                report(&path, remove_now(&entries, closer.as_ref(), r));
            }
            Job::Drained(done) => {
                let _ = done.send(());
            }
        },
    )
    .map_err(
        |e| tracing::error!(error = %e, "remover thread did not start: removes do it themselves"),
    )
    .ok()
}

/// Queues `r` for the remover thread; gives it back when there is no
/// thread or no room (the caller removes it itself).
pub(super) fn queue(
    remover: Option<&crossbeam_channel::Sender<Job>>,
    r: Removal,
) -> Option<Removal> {
    let Some(tx) = remover else { return Some(r) };
    match tx.try_send(Job::Remove(r)).map_err(|e| e.into_inner()) {
        Ok(()) => None,
        Err(Job::Remove(r)) => Some(r),
        Err(Job::Drained(_)) => None,
    }
}

/// Waits (up to `limit`) until the removals queued so far are done: a
/// server that stops leaves no orphan content file behind.
pub(super) fn drain(remover: &crossbeam_channel::Sender<Job>, limit: std::time::Duration) {
    let (done, drained) = crossbeam_channel::bounded(1);
    if remover.send_timeout(Job::Drained(done), limit).is_err()
        || drained.recv_timeout(limit).is_err()
    {
        tracing::warn!(
            "content files of removed nodes still queued at stop: start-up will report them"
        );
    }
}
