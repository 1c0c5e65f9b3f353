//! Replies held until the changes they report are durable, for every NFS
//! version. A call that changes the catalog (a create, a remove, a rename,
//! a SETATTR) does not wait for the intent journal on its thread: it
//! finishes, and its reply is held until each change it made is durable —
//! the promise the reply makes is the same, and the metadata thread goes
//! on to other clients' calls instead of sleeping through a flush of the
//! disk. With sixteen creators on eight metadata threads, each durable
//! change held its thread through the flush and calls queued behind them
//! (perf/README.md, finding 57).
//!
//! A change that cannot be made durable replaces the reply with the one the
//! call would have given had it waited and failed there; each version says
//! what that reply is.

use crate::catalog::{CatalogError, Pending};
use crate::rpc::{Hold, Release, Reply};

/// Run once a change is durable (the content file of a removed node goes:
/// before then a crash keeps the node, which must keep its bytes).
pub type AfterDurable = Box<dyn FnOnce() + Send>;

/// One change a reply waits for; `M` marks where the call made it (a
/// COMPOUND's operation), for the reply that replaces it if it fails.
struct Change<M> {
    pending: Pending,
    after: Option<AfterDurable>,
    mark: M,
}

/// The changes a call's reply waits for, in the order they were made.
pub struct Awaited<M> {
    changes: Vec<Change<M>>,
}

impl<M> Default for Awaited<M> {
    fn default() -> Self {
        Awaited {
            changes: Vec::new(),
        }
    }
}

/// Makes the reply sent in place of one whose change failed: from that
/// reply, the change's mark and the error.
pub type Failed<M> = Box<dyn FnOnce(&Reply, M, &CatalogError) -> Reply + Send>;

impl<M: Send + 'static> Awaited<M> {
    pub fn push(&mut self, pending: Pending, after: Option<AfterDurable>, mark: M) {
        self.changes.push(Change {
            pending,
            after,
            mark,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// A hold that lets the reply go once every change is durable, each
    /// one's `after` run as it becomes so; the first that fails sends
    /// `failed`'s reply instead (the changes after it are not waited for).
    pub fn hold(self, failed: Failed<M>) -> Hold {
        Hold::new(move |reply, release| settle(self.changes.into_iter(), failed, reply, release))
    }
}

fn settle<M: Send + 'static>(
    mut changes: std::vec::IntoIter<Change<M>>,
    failed: Failed<M>,
    reply: Reply,
    release: Release,
) {
    let Some(Change {
        pending,
        after,
        mark,
    }) = changes.next()
    else {
        release(reply);
        return;
    };
    pending.then(move |outcome| match outcome {
        Ok(()) => {
            if let Some(after) = after {
                after();
            }
            settle(changes, failed, reply, release)
        }
        Err(e) => release(failed(&reply, mark, &e)),
    });
}
