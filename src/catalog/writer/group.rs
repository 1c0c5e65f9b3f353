//! The group commit: namespace jobs queue here, and the first submitter
//! to wait (or to hand over its reply) leads them into the journal while
//! others queue behind it.

use parking_lot::Mutex;
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::{tell_all, Job, Msg, Sink};

/// Namespace jobs waiting for the journal, and what writes them: whoever
/// holds `sink` takes node images and hands batches to the back thread, so
/// batches reach SQLite in the order their images were taken.
pub(crate) struct Group {
    pub queued: Mutex<Vec<Job>>,
    pub sink: Arc<Mutex<Sink>>,
    pub front: Sender<Msg>,
    pub max_batch: usize,
}

impl Group {
    /// Journals every queued job, in batches, until none is left or another
    /// thread holds the sink (it looks again after letting go). `block`:
    /// wait for the sink rather than leave the jobs to its holder.
    /// Each batch's answers are given once the sink is let go: what they
    /// run (a reply written to its client) never holds up the next record.
    pub fn lead(&self, block: bool) {
        loop {
            let mut sink = if block {
                self.sink.lock()
            } else {
                match self.sink.try_lock() {
                    Some(s) => s,
                    None => return,
                }
            };
            let jobs: Vec<Job> = {
                let mut q = self.queued.lock();
                let n = q.len().min(self.max_batch);
                q.drain(..n).collect()
            };
            let answers = if jobs.is_empty() {
                Vec::new()
            } else {
                sink.send(jobs, Vec::new(), Vec::new(), false)
            };
            drop(sink);
            tell_all(answers);
            // A job queued while the sink was held, by a submitter whose
            // try_lock failed, is ours to lead.
            if self.queued.lock().is_empty() {
                return;
            }
        }
    }
}

/// See `Catalog::hold_journal`; dropped, it leads what queued meanwhile.
#[cfg(test)]
pub(crate) struct JournalHeld<'a> {
    group: &'a Group,
    sink: Option<parking_lot::MutexGuard<'a, Sink>>,
}

#[cfg(test)]
impl Group {
    pub fn hold(&self) -> JournalHeld<'_> {
        JournalHeld {
            group: self,
            sink: Some(self.sink.lock()),
        }
    }
}

#[cfg(test)]
impl Drop for JournalHeld<'_> {
    fn drop(&mut self) {
        self.sink = None;
        self.group.lead(false);
    }
}
