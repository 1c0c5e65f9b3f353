//! A job's answer, from the thread that makes it durable to the thread
//! waiting for it. The wait is for a flush of the disk (hundreds of
//! microseconds), so the waiter sleeps at once: a channel's receive first
//! spins and then yields the CPU several times, and with sixteen creators
//! on two cores each yield was a context switch (7 % of the server's
//! samples, all of it waiting).

use std::sync::{Arc, Condvar, Mutex};

/// What a waiter is told: durable (or committed), or why not.
pub(crate) type Outcome = Result<(), String>;

/// Told when the writer goes before it answers.
pub(crate) const STOPPED: &str = "catalog writer has stopped";

struct Slot {
    outcome: Mutex<Option<Outcome>>,
    told: Condvar,
}

/// The answering half: [`Answerer::tell`] once; dropped untold, the waiter
/// hears that the writer has stopped.
pub(crate) struct Answerer(Option<Arc<Slot>>);

/// The waiting half.
pub(crate) struct Answer(Arc<Slot>);

/// A new answer to give and to wait for.
pub(crate) fn answer() -> (Answerer, Answer) {
    let slot = Arc::new(Slot {
        outcome: Mutex::new(None),
        told: Condvar::new(),
    });
    (Answerer(Some(slot.clone())), Answer(slot))
}

impl Answerer {
    pub fn tell(mut self, outcome: Outcome) {
        if let Some(slot) = self.0.take() {
            *slot.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
            slot.told.notify_one();
        }
    }
}

impl Drop for Answerer {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            Answerer(Some(slot)).tell(Err(STOPPED.into()));
        }
    }
}

impl Answer {
    /// An answer already given.
    pub fn ready(outcome: Outcome) -> Answer {
        let (tx, rx) = answer();
        tx.tell(outcome);
        rx
    }

    /// Sleeps until the answer is given (once: it is taken).
    pub fn wait(&self) -> Outcome {
        let mut outcome = self.0.outcome.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(o) = outcome.take() {
                return o;
            }
            outcome = self.0.told.wait(outcome).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waiter_gets_what_was_told_or_that_the_writer_stopped() {
        let (tx, rx) = answer();
        let teller = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            tx.tell(Err("disk full".into()));
        });
        assert_eq!(rx.wait(), Err("disk full".to_string()));
        teller.join().unwrap();
        let (tx, rx) = answer();
        drop(tx);
        assert_eq!(rx.wait(), Err(STOPPED.to_string()));
        assert_eq!(Answer::ready(Ok(())).wait(), Ok(()));
    }
}
