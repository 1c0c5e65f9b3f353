//! One client connection, pipelined: records are read as they arrive and
//! each is dispatched on the blocking pool, so a slow operation never stalls
//! the socket; replies are written as they finish (the XID pairs them up),
//! several at a time with one `writev`.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

use super::receive::CallReader;
use crate::config::NetworkConfig;
use crate::rpc::message::Outcome;
use crate::rpc::record::{record_mark, RecordError};
use crate::rpc::{Dispatcher, Reply};

/// Most replies gathered into one writev.
const MAX_BATCH: usize = 32;

pub async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    dispatcher: Arc<Dispatcher>,
    cfg: NetworkConfig,
) {
    tracing::debug!(%peer, "connection opened");
    let (read_half, write_half) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel::<Reply>();
    let writer = tokio::spawn(write_replies(write_half, rx, peer));
    let inflight = Arc::new(Semaphore::new(cfg.max_inflight_per_connection));
    let mut reader = CallReader::new(read_half, cfg.max_record, cfg.splice_writes);
    let pipes = reader.pipes.clone();
    // Record buffers come back here after dispatch and are reused.
    let buffers: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
    let keep = cfg.max_inflight_per_connection;
    loop {
        let mut record = buffers.lock().pop().unwrap_or_default();
        let bulk = match reader.next(&mut record, &dispatcher).await {
            Ok(Some(bulk)) => bulk.map(Arc::new),
            Ok(None) => break,
            Err(RecordError::Io(e)) => {
                tracing::debug!(%peer, error = %e, "connection read error");
                break;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break;
        };
        let dispatcher = dispatcher.clone();
        let tx = tx.clone();
        let buffers = buffers.clone();
        let pipes = pipes.clone();
        tokio::task::spawn_blocking(move || {
            match dispatcher.dispatch_with_bulk(&record, bulk.clone(), Some(peer)) {
                Outcome::Reply(reply) => {
                    let _ = tx.send(reply);
                }
                Outcome::Ignore => {}
                Outcome::Close(why) => {
                    tracing::warn!(%peer, why, "unanswerable record");
                    // An empty reply tells the writer to close.
                    let _ = tx.send(Reply::default());
                }
            }
            let mut pool = buffers.lock();
            if pool.len() < keep {
                record.clear();
                pool.push(record);
            }
            drop(pool);
            pipes.give_back(bulk);
            drop(permit);
        });
    }
    drop(tx);
    // The writer drains what is still in flight, then closes.
    let _ = writer.await;
    tracing::debug!(%peer, "connection closed");
}

async fn write_replies<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<Reply>,
    peer: SocketAddr,
) {
    let mut batch: Vec<Reply> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let close = batch.iter().any(|r| r.parts.is_empty());
        batch.retain(|r| !r.parts.is_empty());
        if let Err(e) = write_batch(&mut w, &batch).await {
            tracing::debug!(%peer, error = %e, "reply write failed");
            return;
        }
        batch.clear();
        if close {
            let _ = w.shutdown().await;
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// Writes replies, each with its record mark, with as few writev calls as
/// the socket allows.
async fn write_batch<W: AsyncWrite + Unpin>(w: &mut W, batch: &[Reply]) -> std::io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let marks: Vec<[u8; 4]> = batch.iter().map(|r| record_mark(r.len())).collect();
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(batch.len() * 4);
    for (reply, mark) in batch.iter().zip(&marks) {
        slices.push(IoSlice::new(mark));
        for p in &reply.parts {
            slices.push(IoSlice::new(p.as_slice()));
        }
    }
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}
