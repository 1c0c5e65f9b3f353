//! Reading calls off a connection. Small records go through a small
//! buffer; a large WRITE's payload, on Linux, is `splice`d from the socket
//! into a pipe instead of being copied into the record (see `crate::pipe`):
//! the record keeps everything else, and the WRITE moves the data from the
//! pipe into the file — one CPU copy per byte instead of two.

use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncBufRead, BufReader, Interest};
use tokio::net::tcp::OwnedReadHalf;

use crate::pipe::{bytes_readable, Pipe};
use crate::rpc::record::{finish_record, read_fragment_header, read_into, RecordError};
use crate::rpc::{BulkData, Dispatcher};

/// Read buffer for record headers and small records. Kept small because a
/// large WRITE's head is read through it and whatever it over-reads of the
/// payload is copied into the pipe.
const READ_BUFFER: usize = 8 << 10;
/// Bytes of a large record read before deciding whether to splice: enough
/// for the RPC header with AUTH_SYS credentials, the COMPOUND header, a
/// PUTFH and the WRITE arguments up to the data.
const HEAD: usize = 1024;
/// Smaller payloads are copied: splicing them saves less than it costs.
const SPLICE_MIN: usize = 64 << 10;
/// Pipe size: 1 MiB, the most an unprivileged process may ask for by
/// default (`/proc/sys/fs/pipe-max-size`). A pipe holds that much only in
/// full pages; payloads that arrive in smaller pieces take several pipes.
const PIPE_SIZE: usize = 1 << 20;
/// Most pipes one payload may fill: a megabyte received in 1500-byte
/// frames takes three.
const MAX_PIPES_PER_PAYLOAD: usize = 8;
/// Pipes kept per connection for reuse.
const KEEP_PIPES: usize = 16;

/// WRITE payloads spliced, those that went back to being copied because
/// their pipes filled up first, and those copied because no pipe could be
/// had at all — for tests and for the operator.
static SPLICED: AtomicU64 = AtomicU64::new(0);
static SPLICE_FALLBACKS: AtomicU64 = AtomicU64::new(0);
static NO_PIPE: AtomicU64 = AtomicU64::new(0);
/// The system's pipe limits were met (warned once per process).
static PIPE_LIMIT_WARNED: AtomicBool = AtomicBool::new(false);

/// How WRITE payloads were received since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpliceCounts {
    /// Spliced socket -> pipe -> file.
    pub spliced: u64,
    /// Copied after the pipes a payload may take filled up.
    pub copied_pipes_full: u64,
    /// Copied because no pipe could be made (the system's pipe limits).
    pub copied_no_pipe: u64,
}

pub fn splice_counts() -> SpliceCounts {
    SpliceCounts {
        spliced: SPLICED.load(Ordering::Relaxed),
        copied_pipes_full: SPLICE_FALLBACKS.load(Ordering::Relaxed),
        copied_no_pipe: NO_PIPE.load(Ordering::Relaxed),
    }
}

/// The pipes of one connection: taken for a WRITE, given back once the
/// WRITE has emptied them.
#[derive(Default)]
pub(crate) struct PipePool {
    pipes: Mutex<Vec<Pipe>>,
}

impl PipePool {
    fn take(&self) -> Option<Pipe> {
        if let Some(p) = self.pipes.lock().pop() {
            return Some(p);
        }
        let refused = match Pipe::with_capacity(PIPE_SIZE) {
            Ok(p) if p.capacity() >= PIPE_SIZE => return Some(p),
            Ok(p) => format!("the pipe holds {} bytes", p.capacity()),
            Err(e) => e.to_string(),
        };
        // Pipe limits reached (or no splice here): copy instead. Correct,
        // but slower — worth the operator's knowing once.
        if !PIPE_LIMIT_WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %refused,
                "no {PIPE_SIZE}-byte pipe to be had: WRITE payloads are copied instead of \
                 spliced; many streaming clients need a higher fs.pipe-user-pages-soft \
                 (and fs.pipe-max-size >= {PIPE_SIZE})"
            );
        }
        None
    }

    /// Takes back a call's pipe once the call is done with it.
    pub(crate) fn give_back(&self, bulk: Option<Arc<BulkData>>) {
        if let Some(bulk) = bulk.and_then(|b| Arc::try_unwrap(b).ok()) {
            for pipe in bulk.pipes {
                self.put(pipe);
            }
        }
    }

    /// Keeps an empty pipe for the next payload. One that still holds
    /// data (a WRITE that failed before moving it) is closed, and the
    /// data goes with it.
    fn put(&self, pipe: Pipe) {
        if pipe.queued().ok() != Some(0) {
            return;
        }
        let mut pipes = self.pipes.lock();
        if pipes.len() < KEEP_PIPES {
            pipes.push(pipe);
        }
    }
}

/// A pipe took all the buffers it could while the socket still had data.
#[derive(Debug)]
struct PipeFull;

impl std::fmt::Display for PipeFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pipe full")
    }
}

impl std::error::Error for PipeFull {}

/// Reads calls from one connection.
pub(crate) struct CallReader {
    reader: BufReader<OwnedReadHalf>,
    max_record: usize,
    /// Move large WRITE payloads through pipes (Linux only).
    splice: bool,
    pub(crate) pipes: Arc<PipePool>,
}

impl CallReader {
    /// `splice`: move large WRITE payloads through pipes (Linux only).
    pub(crate) fn new(read_half: OwnedReadHalf, max_record: usize, splice: bool) -> Self {
        CallReader {
            reader: BufReader::with_capacity(READ_BUFFER, read_half),
            max_record,
            splice: splice && cfg!(target_os = "linux"),
            pipes: Arc::default(),
        }
    }

    /// Reads the next record into `buf` (cleared first). `Ok(None)` is a
    /// clean end of stream; `Ok(Some(bulk))` a record, with its WRITE
    /// payload in `bulk` when it was spliced out of the record.
    pub(crate) async fn next(
        &mut self,
        buf: &mut Vec<u8>,
        dispatcher: &Dispatcher,
    ) -> Result<Option<Option<BulkData>>, RecordError> {
        buf.clear();
        let r = &mut self.reader;
        let Some(fragment) = read_fragment_header(r, 0, self.max_record).await? else {
            return Ok(None);
        };
        if !(self.splice && fragment.last && fragment.len >= SPLICE_MIN) {
            finish_record(r, buf, fragment.len, fragment.last, self.max_record).await?;
            return Ok(Some(None));
        }
        let head = fragment.len.min(HEAD);
        read_into(r, buf, head).await?;
        let span = dispatcher.locate_bulk(buf).filter(|s| {
            s.len >= SPLICE_MIN
                && s.len <= PIPE_SIZE
                && s.record_at + s.len.next_multiple_of(4) <= fragment.len
                && s.record_at + s.len >= head
        });
        let Some(span) = span else {
            finish_record(r, buf, fragment.len - head, true, self.max_record).await?;
            return Ok(Some(None));
        };
        let Some(first) = self.pipes.take() else {
            NO_PIPE.fetch_add(1, Ordering::Relaxed);
            finish_record(r, buf, fragment.len - head, true, self.max_record).await?;
            return Ok(Some(None));
        };
        // The payload: what the head read took of it, what the read buffer
        // holds, then the socket.
        first
            .push(&buf[span.record_at..])
            .map_err(RecordError::Io)?;
        buf.truncate(span.record_at);
        let mut left = span.len - (head - span.record_at);
        let buffered = r.buffer();
        let n = buffered.len().min(left);
        first.push(&buffered[..n]).map_err(RecordError::Io)?;
        Pin::new(&mut *r).consume(n);
        left -= n;
        let mut pipes = vec![first];
        let stream = r.get_ref().as_ref();
        let fd = stream.as_raw_fd();
        while left > 0 {
            let pipe = pipes.last().expect("at least one pipe");
            // WouldBlock from this closure means the socket is empty: tokio
            // then clears its readiness and `readable` waits for more data.
            // A full pipe must not look like that — the socket is still
            // readable and no new data may ever come to wake us.
            let spliced = stream.try_io(Interest::READABLE, || match pipe.splice_from(fd, left) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && bytes_readable(fd)? > 0 => {
                    Err(std::io::Error::other(PipeFull))
                }
                other => other,
            });
            match spliced {
                Ok(0) => {
                    return Err(RecordError::Truncated {
                        got: fragment.len - left,
                        expected: fragment.len,
                    })
                }
                Ok(n) => left -= n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stream.readable().await?,
                Err(e) if e.get_ref().is_some_and(|i| i.is::<PipeFull>()) => {
                    // Pipes count buffers, not bytes: received data in small
                    // pieces (1500-byte frames, 4 KiB pages) fills one before
                    // a megabyte is in. Go on in another pipe, or, with none
                    // to be had, copy this payload after all.
                    let more = (pipes.len() < MAX_PIPES_PER_PAYLOAD)
                        .then(|| self.pipes.take())
                        .flatten();
                    match more {
                        Some(p) => pipes.push(p),
                        None => {
                            for p in pipes {
                                p.drain_into(buf)?;
                                self.pipes.put(p);
                            }
                            SPLICE_FALLBACKS.fetch_add(1, Ordering::Relaxed);
                            finish_record(r, buf, fragment.len - buf.len(), true, self.max_record)
                                .await?;
                            return Ok(Some(None));
                        }
                    }
                }
                Err(e) => return Err(RecordError::Io(e)),
            }
        }
        // Skip the XDR padding; the rest of the record follows in `buf`.
        let padding = span.len.next_multiple_of(4) - span.len;
        let mut pad = Vec::with_capacity(4);
        read_into(r, &mut pad, padding).await?;
        let tail = fragment.len - span.record_at - span.len - padding;
        read_into(r, buf, tail).await?;
        SPLICED.fetch_add(1, Ordering::Relaxed);
        Ok(Some(Some(BulkData {
            at: span.args_at,
            len: span.len,
            pipes,
            order: span.order,
        })))
    }
}
