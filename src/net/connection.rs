//! One client connection, pipelined: records are read as they arrive and
//! each is dispatched on the blocking pool, so a slow operation never stalls
//! the socket; replies are written as they finish (the XID pairs them up),
//! by the thread that finished the call or gathered several into one
//! `writev` ([`super::replies`]). Calls whose payload the transport
//! spliced (streaming WRITEs) go through per-file lanes instead (see
//! [`Lane`]). Calls that move no file data have their own admission budget
//! and their own threads ([`WorkerPool::metadata`]), so a GETATTR sent
//! behind a deep WRITE stream is read, run and answered at once.
//!
//! What a connection may hold is bounded: a call keeps its admission slot,
//! and a READ its share of `max_reply_bytes`, until its reply has been
//! written to the socket. A client that sends calls and never reads the
//! replies stops being read instead of growing the server.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::receive::CallReader;
use super::replies::{replies, Replies};
use super::workers::WorkerPool;
use crate::config::NetworkConfig;
use crate::rpc::complaints::Complaints;
use crate::rpc::message::{Admission, Outcome};
use crate::rpc::record::RecordError;
use crate::rpc::{Dispatcher, Reply};

/// The unit of the reply budget's semaphore.
const BUDGET_UNIT: usize = 1024;

/// What a call holds of its connection until its reply is written.
struct Held {
    _slot: OwnedSemaphorePermit,
    _reply_bytes: Option<OwnedSemaphorePermit>,
}

/// Lanes per connection; calls are spread over them by order key. Two
/// files streamed at once on one connection share a lane only when their
/// keys collide (then they take turns, as on one file).
const LANES: usize = 8;

static OPEN: AtomicU64 = AtomicU64::new(0);
static ACCEPTED: AtomicU64 = AtomicU64::new(0);

/// Connections open now, and accepted since start (the metrics endpoint).
pub fn connection_counts() -> (u64, u64) {
    (
        OPEN.load(Ordering::Relaxed),
        ACCEPTED.load(Ordering::Relaxed),
    )
}

/// Counts a connection open until dropped.
struct Counted;

impl Counted {
    fn new() -> Counted {
        OPEN.fetch_add(1, Ordering::Relaxed);
        ACCEPTED.fetch_add(1, Ordering::Relaxed);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

pub async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    dispatcher: Arc<Dispatcher>,
    cfg: NetworkConfig,
    mut stop: watch::Receiver<bool>,
) {
    let _counted = Counted::new();
    tracing::debug!(%peer, "connection opened");
    let (read_half, write_half) = stream.into_split();
    // Queued replies are unbounded as a channel; bounded by the slots and
    // budget their calls hold until the writer has written them.
    let (replies, writer) = replies::<Held>(write_half);
    let replies = Arc::new(replies);
    let writer = tokio::spawn(writer.run(peer));
    // Data calls (READ, WRITE, COMMIT) and the rest are admitted apart: a
    // client with its whole WRITE window in flight (128 on macOS) still has
    // its metadata calls read off the socket.
    let data_slots = Arc::new(Semaphore::new(cfg.max_inflight_per_connection));
    let other_slots = Arc::new(Semaphore::new(cfg.max_inflight_metadata));
    let budget_units = cfg.max_reply_bytes.div_ceil(BUDGET_UNIT).max(1);
    let reply_budget = Arc::new(Semaphore::new(budget_units));
    let metadata = WorkerPool::metadata(cfg.metadata_threads);
    let mut reader = CallReader::new(read_half, cfg.max_record, cfg.splice_writes);
    let pipes = reader.pipes.clone();
    // Record buffers come back here after dispatch and are reused.
    let buffers: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    let keep = cfg.max_inflight_per_connection + cfg.max_inflight_metadata;
    let lanes: [Arc<Lane>; LANES] = Default::default();
    loop {
        let mut record = buffers.lock().pop().unwrap_or_default();
        // Once the server stops, no further call is read: those read are
        // answered below, and the client resends the rest to the next
        // server (a record cut off here was never answered).
        let next = tokio::select! {
            next = reader.next(&mut record, &dispatcher) => next,
            _ = stop.wait_for(|s| *s) => break,
        };
        let bulk = match next {
            Ok(Some(bulk)) => bulk.map(Arc::new),
            Ok(None) => break,
            Err(RecordError::Io(e)) => {
                tracing::debug!(%peer, error = %e, "connection read error");
                break;
            }
            Err(e) => {
                let what = match e {
                    RecordError::TooLarge { .. } => {
                        "closing a connection: a record over the size limit"
                    }
                    _ => "closing a connection: a record cut short",
                };
                Complaints::global().warn(Some(peer.ip()), what, &e);
                break;
            }
        };
        let lane = bulk
            .as_ref()
            .map(|b| lanes[b.order as usize % LANES].clone());
        // A spliced WRITE is data with a small reply: its header is not
        // read again.
        let admission = match bulk {
            Some(_) => Admission {
                data: true,
                reply_data: 0,
            },
            None => dispatcher.admission(&record),
        };
        let is_data = admission.data;
        let slots = if is_data { &data_slots } else { &other_slots };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        // A READ waits here, before it is run, for room for its reply.
        let units = (admission.reply_data as usize)
            .div_ceil(BUDGET_UNIT)
            .min(budget_units);
        let reply_bytes = if units == 0 {
            None
        } else {
            match reply_budget.clone().acquire_many_owned(units as u32).await {
                Ok(p) => Some(p),
                Err(_) => break,
            }
        };
        let held = Held {
            _slot: slot,
            _reply_bytes: reply_bytes,
        };
        if lane.is_none() && !is_data {
            // A call answered from memory is answered here, on the thread
            // that read it (see `Dispatcher::try_in_place`).
            if let Some(outcome) = dispatcher.try_in_place(&record, Some(peer)) {
                if !answer(&replies, outcome, held, peer, true) {
                    break;
                }
                record.clear();
                buffers.lock().push(record);
                continue;
            }
        }
        let dispatcher = dispatcher.clone();
        let replies = replies.clone();
        // Data calls' replies go to the writer task: a lane writing them
        // itself would hold up the next WRITE of its file, and the writer
        // gathers a stream's replies into few writev calls.
        let direct = lane.is_none() && !is_data;
        let buffers = buffers.clone();
        let pipes = pipes.clone();
        let call = move || {
            let outcome = dispatcher.dispatch_with_bulk(&record, bulk.clone(), Some(peer));
            let mut pool = buffers.lock();
            if pool.len() < keep {
                record.clear();
                pool.push(record);
            }
            drop(pool);
            pipes.give_back(bulk);
            answer(&replies, outcome, held, peer, direct);
        };
        match lane {
            Some(lane) => lane.run(Box::new(call)),
            None if is_data => {
                tokio::task::spawn_blocking(call);
            }
            None => metadata.run(Box::new(call)),
        }
    }
    drop(replies);
    // The writer drains what is still in flight, then closes.
    let _ = writer.await;
    tracing::debug!(%peer, "connection closed");
}

/// Hands a call's outcome to the connection's replies (`direct`: written
/// by this thread if nothing is queued before it); false once the
/// connection is to close. A held reply is written by the thread its hold
/// lets it go on (the one that made its change durable); the call keeps
/// its slot until then.
fn answer(
    replies: &Arc<Replies<Held>>,
    outcome: Outcome,
    held: Held,
    peer: SocketAddr,
    direct: bool,
) -> bool {
    match outcome {
        Outcome::Reply(reply) if direct => {
            replies.send(reply, held);
            true
        }
        Outcome::Reply(reply) => {
            replies.queue(reply, held);
            true
        }
        Outcome::Held(reply, hold) => {
            let replies = replies.clone();
            hold.release(
                reply,
                Box::new(move |reply| {
                    let _ = answer(&replies, Outcome::Reply(reply), held, peer, direct);
                }),
            );
            true
        }
        Outcome::Ignore => true,
        Outcome::Close(why) => {
            Complaints::global().warn(Some(peer.ip()), "unanswerable record", &why);
            // An empty reply tells the writer to close.
            replies.queue(Reply::default(), held);
            false
        }
    }
}

type Call = Box<dyn FnOnce() + Send>;

/// Calls of one connection that would only wait for each other — streaming
/// WRITEs of one file, which the kernel lets into the file one at a time —
/// run here one after another on one blocking thread, in arrival order.
/// Dispatched each on its own thread, sixteen WRITEs in flight meant
/// sixteen thread wake-ups to queue on the file's lock and a hand-over at
/// each turn; a lane wakes a thread when it goes from empty to busy and
/// keeps it while calls keep coming (context switches per WRITE 9.5 → 5.9
/// in the loopback stream).
#[derive(Default)]
struct Lane {
    /// Calls waiting, and whether a thread is draining them.
    queue: Mutex<(VecDeque<Call>, bool)>,
}

impl Lane {
    fn run(self: &Arc<Self>, call: Call) {
        let mut q = self.queue.lock();
        q.0.push_back(call);
        if q.1 {
            return;
        }
        q.1 = true;
        drop(q);
        let lane = self.clone();
        tokio::task::spawn_blocking(move || lane.drain());
    }

    fn drain(&self) {
        loop {
            let next = {
                let mut q = self.queue.lock();
                let next = q.0.pop_front();
                if next.is_none() {
                    q.1 = false;
                }
                next
            };
            let Some(call) = next else {
                return;
            };
            // A call that panics must not leave the lane marked busy with
            // nobody draining it: the connection would hang.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).is_err() {
                tracing::error!("a call panicked in its lane; the lane goes on");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn a_lane_runs_its_calls_in_order_one_at_a_time_and_survives_a_panic() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let lane = Arc::new(Lane::default());
        let ran = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicUsize::new(0));
        // Set, not asserted, inside a call: the lane catches panics.
        let overlapped = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        rt.block_on(async {
            for i in 0..200usize {
                let (ran, running, done) = (ran.clone(), running.clone(), done_tx.clone());
                let overlapped = overlapped.clone();
                lane.run(Box::new(move || {
                    if running.fetch_add(1, Ordering::SeqCst) != 0 {
                        overlapped.store(true, Ordering::SeqCst);
                    }
                    ran.lock().push(i);
                    if i % 7 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                    let _ = done.send(());
                    if i == 50 {
                        panic!("call 50 fails");
                    }
                }));
                if i % 20 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        for _ in 0..200 {
            done_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("lane stalled");
        }
        assert_eq!(*ran.lock(), (0..200).collect::<Vec<_>>());
        assert!(!overlapped.load(Ordering::SeqCst), "two calls ran at once");
        // Drained: the next call starts a thread again.
        let (tx, rx) = std::sync::mpsc::channel();
        rt.block_on(async { lane.run(Box::new(move || tx.send(()).unwrap())) });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("idle lane did not restart");
    }
}
