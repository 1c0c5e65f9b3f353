//! The duplicate request cache of the NFS programs: a retransmitted call
//! that changes something (a CREATE, REMOVE, RENAME...) gets the reply of
//! its first sending instead of running again and answering a spurious
//! NOENT or EXIST. Clients retransmit after a reconnect, often while the
//! first sending still runs or holds its reply until its change is durable:
//! such a retransmission waits for that reply rather than running too.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::reply::{ReplyBody, ReplyPart};
use super::{Hold, Release, Reply};

/// Names one call: who sent it (see `CallContext::caller_key`), its xid and
/// a hash of its arguments (a reused xid with other arguments is another
/// call).
pub type CallKey = (u64, u32, u64);

/// How long a sent reply is kept for retransmissions.
const KEPT_FOR: Duration = Duration::from_secs(300);

/// The calls seen lately, each running or answered.
pub struct DuplicateReplies {
    calls: moka::sync::Cache<CallKey, Arc<Call>>,
}

/// One call's first sending, as retransmissions find it.
struct Call(Mutex<Sending>);

enum Sending {
    /// It runs, or its reply is held: retransmissions wait here, each with
    /// its own reply head and how to send it. Bounded by the calls the
    /// connections may have in flight.
    Running(Vec<(Reply, Release)>),
    /// Its reply was sent: the program's part of it, after the RPC head.
    Sent(Arc<Vec<u8>>),
    /// It ended without a reply to keep (see `Claim`'s drop): a
    /// retransmission waiting gets no reply and the client sends again.
    Dropped,
}

/// A call's first sending, before it has run: see [`DuplicateReplies::claim`].
pub struct Claim {
    key: CallKey,
    call: Arc<Call>,
    calls: moka::sync::Cache<CallKey, Arc<Call>>,
}

/// A call seen before: a retransmission, answered by
/// [`Earlier::answer`].
pub struct Earlier(Arc<Call>);

impl DuplicateReplies {
    /// A cache of at most `entries` calls.
    pub fn new(entries: u64) -> DuplicateReplies {
        DuplicateReplies {
            calls: moka::sync::Cache::builder()
                .max_capacity(entries.max(1))
                .time_to_live(KEPT_FOR)
                .build(),
        }
    }

    /// The call `key` names if it was seen before (cheap when it was not:
    /// every COMPOUND asks).
    pub fn earlier(&self, key: &CallKey) -> Option<Earlier> {
        self.calls.get(key).map(Earlier)
    }

    /// Marks the call `key` names as running, before it changes anything:
    /// a retransmission from now on waits for its reply. `Err` if it was
    /// seen before (another sending of it runs or has been answered).
    pub fn claim(&self, key: CallKey) -> Result<Claim, Earlier> {
        let entry = self
            .calls
            .entry(key)
            .or_insert_with(|| Arc::new(Call(Mutex::new(Sending::Running(Vec::new())))));
        if !entry.is_fresh() {
            return Err(Earlier(entry.into_value()));
        }
        Ok(Claim {
            key,
            call: entry.into_value(),
            calls: self.calls.clone(),
        })
    }
}

impl Earlier {
    /// Answers the retransmission whose reply body is `out` (nothing
    /// encoded in it yet): with the first sending's reply, now or — held —
    /// once that reply is sent.
    pub fn answer(self, out: &mut ReplyBody) {
        if let Sending::Sent(bytes) = &*self.0 .0.lock() {
            out.enc().buf.extend_from_slice(bytes);
            return;
        }
        let call = self.0;
        out.hold(Hold::new(move |reply, release| {
            let mut sending = call.0.lock();
            match &mut *sending {
                Sending::Running(waiting) => waiting.push((reply, release)),
                Sending::Sent(bytes) => {
                    let bytes = bytes.clone();
                    drop(sending);
                    release(with_result(reply, &bytes));
                }
                Sending::Dropped => {}
            }
        }));
    }
}

impl Claim {
    /// The call has run and `out` holds its reply, the program's part from
    /// offset `start`: it is kept, and given to the retransmissions waiting,
    /// as it is sent.
    pub fn finish(self, out: &mut ReplyBody, start: usize) {
        out.when_final(start, move |bytes| self.sent(bytes));
    }

    fn sent(self, bytes: Vec<u8>) {
        let bytes = Arc::new(bytes);
        let waiting = {
            let mut sending = self.call.0.lock();
            match std::mem::replace(&mut *sending, Sending::Sent(bytes.clone())) {
                Sending::Running(waiting) => waiting,
                Sending::Sent(_) | Sending::Dropped => Vec::new(),
            }
        };
        for (reply, release) in waiting {
            release(with_result(reply, &bytes));
        }
    }
}

impl Drop for Claim {
    /// A claim dropped unsent (the call failed before it had a reply, or
    /// its reply carries a data part that is not kept) forgets the call: a
    /// later retransmission runs it, and those waiting get no reply.
    fn drop(&mut self) {
        let mut sending = self.call.0.lock();
        if let Sending::Running(_) = &*sending {
            let waiting = std::mem::replace(&mut *sending, Sending::Dropped);
            drop(sending);
            self.calls.invalidate(&self.key);
            drop(waiting);
        }
    }
}

/// A waiting retransmission's reply: its own head, then the first
/// sending's result.
fn with_result(mut reply: Reply, result: &[u8]) -> Reply {
    reply.parts.push(ReplyPart::Bytes(result.to_vec()));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply body with `head` (the RPC part) encoded.
    fn body(head: &[u8]) -> ReplyBody {
        let mut out = ReplyBody::detached();
        out.enc().buf.extend_from_slice(head);
        out
    }

    /// What a held reply is sent as once its hold lets it go.
    fn sent(mut out: ReplyBody) -> std::sync::mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let hold = out.take_hold().expect("a held reply");
        hold.release(
            out.finish(),
            Box::new(move |r| tx.send(r.to_vec()).unwrap()),
        );
        rx
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn a_retransmission_while_the_first_runs_gets_its_reply_when_it_is_sent() {
        let cache = DuplicateReplies::new(16);
        let key = (1, 7, 99);
        let claim = cache.claim(key).ok().expect("the first sending claims");
        // Two retransmissions while it runs: neither runs it again.
        let waiting = [b"a:", b"b:"].map(|head| {
            let again = cache.claim(key).err().expect("seen before");
            let mut out = body(head);
            again.answer(&mut out);
            assert_eq!(out.len(), 2, "answered before the first sending was");
            sent(out)
        });
        assert!(waiting[0].try_recv().is_err());
        let mut first = body(b"head:");
        first.enc().buf.extend_from_slice(b"OK");
        claim.finish(&mut first, 5);
        assert_eq!(waiting[0].recv_timeout(WAIT).unwrap(), b"a:OK");
        assert_eq!(waiting[1].recv_timeout(WAIT).unwrap(), b"b:OK");
        // One after it was sent is answered at once.
        let mut out = body(b"c:");
        cache.earlier(&key).expect("kept").answer(&mut out);
        assert!(out.take_hold().is_none());
        assert_eq!(out.bytes_since(0).unwrap(), b"c:OK");
    }

    #[test]
    fn a_retransmission_of_a_held_reply_is_answered_as_the_reply_leaves() {
        let cache = DuplicateReplies::new(16);
        let key = (2, 8, 1);
        let claim = cache.claim(key).ok().unwrap();
        let (go, gate) = std::sync::mpsc::channel::<()>();
        let mut first = body(b"H:");
        first.enc().buf.extend_from_slice(b"done");
        first.hold(Hold::new(move |r, release| {
            std::thread::spawn(move || {
                gate.recv().unwrap();
                release(r)
            });
        }));
        claim.finish(&mut first, 2);
        let mut again = body(b"h:");
        cache.earlier(&key).unwrap().answer(&mut again);
        let retransmitted = sent(again);
        let first = sent(first);
        assert!(retransmitted
            .recv_timeout(Duration::from_millis(50))
            .is_err());
        go.send(()).unwrap();
        assert_eq!(first.recv_timeout(WAIT).unwrap(), b"H:done");
        assert_eq!(retransmitted.recv_timeout(WAIT).unwrap(), b"h:done");
    }

    #[test]
    fn a_call_that_ends_without_a_reply_is_forgotten() {
        let cache = DuplicateReplies::new(16);
        let key = (3, 9, 2);
        let claim = cache.claim(key).ok().unwrap();
        let mut out = body(b"h:");
        cache.earlier(&key).unwrap().answer(&mut out);
        let waiting = sent(out);
        drop(claim);
        assert!(cache.earlier(&key).is_none(), "forgotten");
        assert!(
            waiting.recv_timeout(Duration::from_secs(1)).is_err(),
            "a waiting retransmission got a reply that was never sent"
        );
        assert!(cache.claim(key).is_ok(), "a later sending runs");
    }
}
