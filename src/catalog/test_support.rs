//! Test support for the layers above the catalog: the demo catalog
//! opened, and a namespace change held open beside a call, to catch calls
//! that take the catalog's locks out of order (see the lock order on
//! `Catalog::ns_lock`). A deadlock is reported as a failed check, not a
//! test that hangs.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use super::{create_demo, Catalog};
use crate::config::CacheConfig;

/// The demo catalog created in `dir` and opened, and its storage folder.
pub(crate) fn open_demo(dir: &Path) -> (Arc<Catalog>, PathBuf) {
    let db = dir.join("u.sqlite");
    let storage = dir.join("storage");
    create_demo(&db, &storage).unwrap();
    let storage = storage.canonicalize().unwrap();
    let catalog = Arc::new(Catalog::open(&db, &CacheConfig::default()).unwrap());
    (catalog, storage)
}

/// How long a namespace change keeps the namespace lock before it takes
/// the lock `change` takes: long enough for `call` to be waiting.
const HELD_FOR: Duration = Duration::from_millis(200);

/// Whether `call` and a namespace change both finish within 10 s. The
/// change holds the namespace lock, as a create does; `call` starts; after
/// [`HELD_FOR`] the change runs `change` (which takes a folder's listing
/// or a node's metadata, as a create does) and lets the namespace lock go.
/// A `call` that holds what `change` takes while it waits for the
/// namespace lock never finishes, and neither does the change.
pub(crate) fn finishes_beside_a_namespace_change(
    catalog: &Arc<Catalog>,
    call: impl FnOnce() + Send + 'static,
    change: impl FnOnce() + Send + 'static,
) -> bool {
    let (held_tx, held_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let changer_done = done_tx.clone();
    let catalog = catalog.clone();
    thread::spawn(move || {
        let ns = catalog.ns_lock.lock();
        held_tx
            .send(())
            .expect("the test waits for the lock to be held");
        thread::sleep(HELD_FOR);
        change();
        drop(ns);
        let _ = changer_done.send(());
    });
    held_rx
        .recv()
        .expect("the changer holds the namespace lock");
    thread::spawn(move || {
        call();
        let _ = done_tx.send(());
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    (0..2).all(|_| {
        done_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    })
}
