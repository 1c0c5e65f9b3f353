//! Replies that may not leave yet: a program that changed something a
//! crash could still undo lets its thread go on to other calls and hands
//! the finished reply over, to be sent (or replaced by an error) by
//! whichever thread learns that the change is durable.

use super::reply::{Reply, ReplyBody, ReplyPart};

/// Sends a reply a [`Hold`] has let go.
pub type Release = Box<dyn FnOnce(Reply) + Send>;

/// What a reply waits for before it is sent (see `Outcome::Held`).
pub struct Hold(Box<dyn FnOnce(Reply, Release) + Send>);

impl Hold {
    /// `until` gets the finished reply and how to send it, and sends it —
    /// or another in its place — once it may, on whatever thread that is.
    pub fn new(until: impl FnOnce(Reply, Release) + Send + 'static) -> Hold {
        Hold(Box::new(until))
    }

    /// Hands `reply` over: `release` gets it (or what replaces it) once the
    /// hold lets it go, maybe on another thread, maybe before this returns.
    pub fn release(self, reply: Reply, release: Release) {
        (self.0)(reply, release)
    }

    /// The same hold, `first` shown the reply just before it is sent.
    pub fn inspect(self, first: impl FnOnce(&Reply) + Send + 'static) -> Hold {
        Hold::new(move |reply, release| {
            self.release(
                reply,
                Box::new(move |r| {
                    first(&r);
                    release(r)
                }),
            )
        })
    }

    /// Waits here until the hold lets the reply go (callers that answer
    /// one call at a time: tests, tools). None if the hold dropped it.
    pub fn wait(self, reply: Reply) -> Option<Reply> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.release(
            reply,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().ok()
    }
}

impl ReplyBody {
    /// Gives `keep` the reply's bytes from offset `start` (a duplicate
    /// request cache's entry) once they are final: now, or as a held reply
    /// is sent (its hold may have replaced it). Never when a data part
    /// follows `start` (`keep` is then dropped uncalled). A retransmission
    /// that comes meanwhile waits for it (see `super::duplicates`).
    pub fn when_final(&mut self, start: usize, keep: impl FnOnce(Vec<u8>) + Send + 'static) {
        match self.take_hold() {
            None => {
                if let Some(bytes) = self.bytes_since(start) {
                    keep(bytes);
                }
            }
            Some(hold) => self.hold(hold.inspect(move |reply| {
                if let [ReplyPart::Bytes(b)] = &reply.parts[..] {
                    if let Some(bytes) = b.get(start..) {
                        keep(bytes.to_vec());
                    }
                }
            })),
        }
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hold")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(b: &[u8]) -> Reply {
        b.to_vec().into()
    }

    #[test]
    fn a_held_reply_leaves_when_its_hold_lets_it_go_and_is_shown_first() {
        let (go, gate) = std::sync::mpsc::channel::<()>();
        let hold = Hold::new(move |r, release| {
            std::thread::spawn(move || {
                gate.recv().unwrap();
                release(r)
            });
        });
        let (shown_tx, shown) = std::sync::mpsc::channel();
        let hold = hold.inspect(move |r| shown_tx.send(r.to_vec()).unwrap());
        let (sent_tx, sent) = std::sync::mpsc::channel();
        hold.release(
            reply(b"abc"),
            Box::new(move |r| sent_tx.send(r.to_vec()).unwrap()),
        );
        let later = std::time::Duration::from_millis(50);
        assert!(
            sent.recv_timeout(later).is_err(),
            "sent before it was let go"
        );
        assert!(shown.try_recv().is_err());
        go.send(()).unwrap();
        let wait = std::time::Duration::from_secs(10);
        assert_eq!(sent.recv_timeout(wait).unwrap(), b"abc");
        assert_eq!(shown.try_recv().unwrap(), b"abc");
        // A hold may send another reply in the first one's place.
        let swap = Hold::new(|_, release| release(reply(b"error")));
        assert_eq!(swap.wait(reply(b"ok")).unwrap().to_vec(), b"error");
        // One that drops the reply: nothing to wait for.
        assert!(Hold::new(|_, _| {}).wait(reply(b"ok")).is_none());
    }
}
