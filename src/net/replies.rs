//! A connection's replies: written at once by the thread that finished the
//! call when nothing is waiting to be written before it, else queued for
//! the connection's writer task, which gathers several into one `writev`.
//!
//! A call run on a metadata thread used to hand its reply to the writer
//! task, waking a network thread only to write it; one client doing one
//! thing at a time (a Finder copy) paid that wake-up on every durable
//! create, remove and SETATTR. Written at once, the reply leaves as soon as
//! the call is done. Data calls' replies (READ, WRITE, COMMIT) and large
//! ones still go to the writer task, which batches them and waits for room
//! in the socket without holding a thread.
//!
//! Bytes of two replies never interleave: a thread writes only when no
//! reply is queued (a partly written one included), under the lock that
//! counts them, and what a write leaves unwritten is queued first.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::rpc::record::record_mark;
use crate::rpc::Reply;

/// Most replies gathered into one writev.
const MAX_BATCH: usize = 32;

/// Replies above this go to the writer task (a large READDIR: the lock is
/// not held while it is copied into the socket).
const DIRECT_MAX: usize = 64 << 10;

/// A reply for the writer task, holding `H` (its call's share of the
/// connection) until written; `written`: bytes of it (record mark
/// included) already on the socket.
pub struct Queued<H> {
    reply: Reply,
    _held: H,
    written: usize,
}

/// What both sides share: the socket and the count of queued replies.
struct Shared {
    /// Replies queued and not yet wholly written: direct writes only at 0.
    queued: Mutex<usize>,
    socket: OwnedWriteHalf,
}

impl Shared {
    fn stream(&self) -> &tokio::net::TcpStream {
        self.socket.as_ref()
    }
}

/// The sending side, shared by every thread that answers calls of the
/// connection.
pub struct Replies<H> {
    queue: mpsc::UnboundedSender<Queued<H>>,
    shared: Arc<Shared>,
}

/// The writer task's side.
pub struct Writer<H> {
    queue: mpsc::UnboundedReceiver<Queued<H>>,
    shared: Arc<Shared>,
}

/// A connection's replies, written to `socket`, and its writer task's end.
pub fn replies<H>(socket: OwnedWriteHalf) -> (Replies<H>, Writer<H>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        queued: Mutex::new(0),
        socket,
    });
    (
        Replies {
            queue: tx,
            shared: shared.clone(),
        },
        Writer { queue: rx, shared },
    )
}

impl<H> Replies<H> {
    /// Sends `reply`, letting go of `held` once it is written. An empty
    /// reply closes the connection once the replies before it are written.
    pub fn send(&self, reply: Reply, held: H) {
        let mut queued = self.shared.queued.lock();
        let mut written = 0;
        if *queued == 0 && !reply.parts.is_empty() && reply.len() <= DIRECT_MAX {
            let mark = record_mark(reply.len());
            let mut slices = Vec::with_capacity(1 + reply.parts.len());
            push_slices(&mut slices, &mark, &reply);
            let mut rest: &mut [IoSlice<'_>] = &mut slices;
            // An error is met again by the writer task, which closes.
            let _ = write_what_fits(self.shared.stream(), &mut rest, &mut written);
            if rest.is_empty() {
                return;
            }
        }
        self.push(&mut queued, reply, held, written);
    }

    /// Queues `reply` for the writer task.
    pub fn queue(&self, reply: Reply, held: H) {
        self.push(&mut self.shared.queued.lock(), reply, held, 0);
    }

    /// Queues `reply`, `written` bytes of it sent, under the count's lock.
    fn push(&self, queued: &mut usize, reply: Reply, held: H, written: usize) {
        *queued += 1;
        let _ = self.queue.send(Queued {
            reply,
            _held: held,
            written,
        });
    }
}

/// A reply's slices, after its record mark.
fn push_slices<'a>(slices: &mut Vec<IoSlice<'a>>, mark: &'a [u8; 4], reply: &'a Reply) {
    slices.push(IoSlice::new(mark));
    slices.extend(reply.parts.iter().map(|p| IoSlice::new(p.as_slice())));
}

/// Writes as much of `rest` as the socket takes now (non-blocking: none
/// when tokio last saw it full), advancing `rest` and `written` past it;
/// the socket's error, if it failed.
fn write_what_fits(
    stream: &tokio::net::TcpStream,
    rest: &mut &mut [IoSlice<'_>],
    written: &mut usize,
) -> std::io::Result<()> {
    while !rest.is_empty() {
        match stream.try_write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                *written += n;
                IoSlice::advance_slices(rest, n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl<H> Writer<H> {
    /// Writes queued replies until every sender is gone or a reply says to
    /// close, then shuts the socket's sending side.
    pub async fn run(mut self, peer: SocketAddr) {
        let mut batch: Vec<Queued<H>> = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = self.queue.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.queue.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            let taken = batch.len();
            let close = batch.iter().any(|q| q.reply.parts.is_empty());
            batch.retain(|q| !q.reply.parts.is_empty());
            if let Err(e) = write_batch(self.shared.stream(), &batch).await {
                tracing::debug!(%peer, error = %e, "reply write failed");
                return;
            }
            // Counted down only once written: until then no thread writes
            // beside this one.
            *self.shared.queued.lock() -= taken;
            batch.clear();
            if close {
                break;
            }
        }
        let _ = socket2::SockRef::from(self.shared.stream()).shutdown(std::net::Shutdown::Write);
    }
}

/// Writes replies, each with its record mark, with as few writev calls as
/// the socket allows; the first may be partly written already.
async fn write_batch<H>(
    stream: &tokio::net::TcpStream,
    batch: &[Queued<H>],
) -> std::io::Result<()> {
    let Some(first) = batch.first() else {
        return Ok(());
    };
    let marks: Vec<[u8; 4]> = batch.iter().map(|q| record_mark(q.reply.len())).collect();
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(batch.len() * 4);
    for (q, mark) in batch.iter().zip(&marks) {
        push_slices(&mut slices, mark, &q.reply);
    }
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    // Only the first can have been started: nothing is written directly
    // while a reply is queued.
    IoSlice::advance_slices(&mut rest, first.written);
    let mut written = 0;
    loop {
        write_what_fits(stream, &mut rest, &mut written)?;
        if rest.is_empty() {
            return Ok(());
        }
        stream.writable().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::ReplyPart;
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts replies not yet let go of.
    struct Held(Arc<AtomicUsize>);

    impl Drop for Held {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Reply `i`: its number, then `len - 4` bytes of `i as u8`, in two
    /// parts.
    fn reply(i: u32, len: usize) -> Reply {
        let mut head = i.to_be_bytes().to_vec();
        head.extend(std::iter::repeat_n(i as u8, len.min(64) - 4));
        let rest = vec![i as u8; len - len.min(64)];
        Reply {
            parts: vec![ReplyPart::Bytes(head), ReplyPart::Data(rest.into())],
        }
    }

    /// A served socket with a small send buffer, its replies and writer
    /// task, and a client with a small receive buffer that has not read.
    fn connection(
        rt: &tokio::runtime::Runtime,
    ) -> (
        Arc<Replies<Held>>,
        tokio::task::JoinHandle<()>,
        std::net::TcpStream,
    ) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        client.set_recv_buffer_size(64 << 10).unwrap();
        client
            .connect(&listener.local_addr().unwrap().into())
            .unwrap();
        let (server, peer) = listener.accept().unwrap();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(128 << 10)
            .unwrap();
        server.set_nonblocking(true).unwrap();
        server.set_nodelay(true).unwrap();
        let stream = rt
            .block_on(async { tokio::net::TcpStream::from_std(server) })
            .unwrap();
        let (_read_half, write_half) = stream.into_split();
        let (replies, writer) = replies::<Held>(write_half);
        let writer = rt.spawn(writer.run(peer));
        (Arc::new(replies), writer, client.into())
    }

    /// Reads records until the server closes; each must be one reply of
    /// `sizes`, whole. Returns their numbers in arrival order; sleeps a
    /// little every `pause_every` records.
    fn read_replies(
        mut client: std::net::TcpStream,
        sizes: &[usize],
        pause_every: usize,
    ) -> Vec<u32> {
        let mut seen = Vec::new();
        let mut mark = [0u8; 4];
        while client.read_exact(&mut mark).is_ok() {
            let word = u32::from_be_bytes(mark);
            assert!(word & 0x8000_0000 != 0, "a record mark, not reply bytes");
            let mut body = vec![0u8; (word & 0x7fff_ffff) as usize];
            client.read_exact(&mut body).unwrap();
            let i = u32::from_be_bytes(body[..4].try_into().unwrap());
            assert_eq!(body.len(), sizes[(i as usize) % sizes.len()], "reply {i}");
            assert!(
                body[4..].iter().all(|&b| b == i as u8),
                "reply {i} interleaved"
            );
            seen.push(i);
            if seen.len() % pause_every == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        seen
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn replies_from_many_threads_arrive_whole_beside_the_writer_tasks() {
        let rt = runtime();
        let (replies, writer, client) = connection(&rt);
        let outstanding = Arc::new(AtomicUsize::new(0));
        // Mostly direct writes (up to 64 KiB), some for the writer task.
        let sizes = [100, 3_000, 20_000, 60_000, 65_000, 200_000];
        // The client reads slower than the threads send, in spells: the
        // socket fills, drains, and fills again many times.
        let reader = std::thread::spawn(move || read_replies(client, &sizes, 16));
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let (replies, outstanding) = (replies.clone(), outstanding.clone());
                std::thread::spawn(move || {
                    for k in 0..100u32 {
                        let i = t * 100 + k;
                        outstanding.fetch_add(1, Ordering::SeqCst);
                        let len = sizes[(i as usize) % sizes.len()];
                        replies.send(reply(i, len), Held(outstanding.clone()));
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Then a close, after which the writer shuts the socket.
        outstanding.fetch_add(1, Ordering::SeqCst);
        replies.send(Reply::default(), Held(outstanding.clone()));
        drop(replies);
        let mut seen = reader.join().expect("replies arrived whole");
        rt.block_on(writer).unwrap();
        seen.sort();
        assert_eq!(seen, (0..400).collect::<Vec<_>>());
        assert_eq!(outstanding.load(Ordering::SeqCst), 0, "all let go of");
    }

    #[test]
    fn a_reply_the_socket_took_in_part_is_finished_before_any_other() {
        let rt = runtime();
        let (replies, writer, client) = connection(&rt);
        let outstanding = Arc::new(AtomicUsize::new(0));
        // Direct sizes only, and nobody reading: the socket's buffers fill
        // and one reply goes in part; the rest must wait behind it.
        let sizes = [60_001, 50_000, 64_000];
        for i in 0..60u32 {
            outstanding.fetch_add(1, Ordering::SeqCst);
            replies.send(reply(i, sizes[i as usize % 3]), Held(outstanding.clone()));
        }
        assert!(*replies.shared.queued.lock() > 0, "the socket filled up");
        outstanding.fetch_add(1, Ordering::SeqCst);
        replies.send(Reply::default(), Held(outstanding.clone()));
        drop(replies);
        let seen = read_replies(client, &sizes, usize::MAX);
        rt.block_on(writer).unwrap();
        assert_eq!(
            seen,
            (0..60).collect::<Vec<_>>(),
            "in order: one thread sent them"
        );
        assert_eq!(outstanding.load(Ordering::SeqCst), 0, "all let go of");
    }
}
