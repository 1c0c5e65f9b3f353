//! A job's answer, from the thread that makes it durable to the thread
//! waiting for it, or to what runs once it is given. The wait is for a
//! flush of the disk (hundreds of microseconds), so the waiter sleeps at
//! once: a channel's receive first spins and then yields the CPU several
//! times, and with sixteen creators on two cores each yield was a context
//! switch (7 % of the server's samples, all of it waiting). A caller with
//! nothing to do meanwhile but reply hands over the reply instead
//! ([`Answer::then`]): its thread goes on to other calls, and whoever gives
//! the answer runs it.

use std::sync::{Arc, Condvar, Mutex};

/// What a waiter is told: durable (or committed), or why not.
pub(crate) type Outcome = Result<(), String>;

/// Run with the answer by the thread that gives it.
pub(crate) type Then = Box<dyn FnOnce(Outcome) + Send>;

/// Told when the writer goes before it answers.
pub(crate) const STOPPED: &str = "catalog writer has stopped";

enum State {
    Waiting,
    Told(Outcome),
    Then(Then),
}

struct Slot {
    state: Mutex<State>,
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
        state: Mutex::new(State::Waiting),
        told: Condvar::new(),
    });
    (Answerer(Some(slot.clone())), Answer(slot))
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Answerer {
    /// Gives the answer: wakes the waiter, or runs what it left to run
    /// (here, on this thread).
    pub fn tell(mut self, outcome: Outcome) {
        let Some(slot) = self.0.take() else {
            return;
        };
        let mut state = slot.state();
        match std::mem::replace(&mut *state, State::Waiting) {
            State::Then(then) => {
                drop(state);
                then(outcome);
            }
            _ => {
                *state = State::Told(outcome);
                drop(state);
                slot.told.notify_one();
            }
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
        let mut state = self.0.state();
        loop {
            if let State::Told(o) = std::mem::replace(&mut *state, State::Waiting) {
                return o;
            }
            state = self.0.told.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Runs `then` with the answer: here and now if it has been given,
    /// else on the thread that gives it.
    pub fn then(&self, then: Then) {
        let mut state = self.0.state();
        match std::mem::replace(&mut *state, State::Waiting) {
            State::Told(outcome) => {
                drop(state);
                then(outcome);
            }
            _ => *state = State::Then(then),
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

    #[test]
    fn what_is_left_to_run_runs_once_with_the_answer_on_the_teller_or_at_once() {
        let ran = |tx: std::sync::mpsc::Sender<(Outcome, String)>| -> Then {
            Box::new(move |o| {
                let on = std::thread::current().name().unwrap_or("").to_string();
                tx.send((o, on)).unwrap();
            })
        };
        let (seen, got) = std::sync::mpsc::channel();
        // Left before the answer: run by the thread that gives it.
        let (tx, rx) = answer();
        rx.then(ran(seen.clone()));
        assert!(got.try_recv().is_err(), "ran before the answer was given");
        std::thread::Builder::new()
            .name("teller".into())
            .spawn(move || tx.tell(Err("disk full".into())))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(
            got.try_recv().unwrap(),
            (Err("disk full".into()), "teller".into())
        );
        // Left after it: run at once, by the caller.
        let (tx, rx) = answer();
        tx.tell(Ok(()));
        let here = std::thread::current().name().unwrap_or("").to_string();
        rx.then(ran(seen.clone()));
        assert_eq!(got.try_recv().unwrap(), (Ok(()), here));
        // The writer gone: told so.
        let (tx, rx) = answer();
        rx.then(ran(seen));
        drop(tx);
        assert_eq!(got.try_recv().unwrap().0, Err(STOPPED.to_string()));
        assert!(got.try_recv().is_err(), "ran twice");
    }
}
