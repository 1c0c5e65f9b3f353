//! READ, WRITE and COMMIT: the NFSv4 data path (pooled descriptors,
//! read-ahead, vectored replies, spliced WRITE payloads, the direct-writer
//! queue, write-behind) under NFSv3's arguments. Size, mtime and change
//! move in memory and the node is queued for the background writer: no
//! SQL runs here.

use std::sync::Arc;

use super::args::{CommitArgs, Payload, ReadArgs, WriteArgs, UNSTABLE};
use super::reply::{Answer, ReadOk, WccAnswer, WriteOk};
use super::{io_status, Call, Nfs3Result, Nfs3Status};
use crate::catalog::{Node, NodeKind};
use crate::export::permission::{READ, WRITE};

/// I/O is for regular files: ISDIR for a folder, INVAL for the rest.
fn regular_file(node: &Node) -> Nfs3Result<()> {
    match node.kind {
        NodeKind::File => Ok(()),
        NodeKind::Folder => Err(Nfs3Status::IsDir),
        _ => Err(Nfs3Status::Inval),
    }
}

pub fn read(call: &Call<'_>, a: &ReadArgs<'_>) -> Answer<ReadOk> {
    call.answer(a.fh, |node| read_node(call, node, a))
}

fn read_node(call: &Call<'_>, node: &Arc<Node>, a: &ReadArgs<'_>) -> Nfs3Result<ReadOk> {
    regular_file(node)?;
    call.require(node, READ)?;
    let export = call.export;
    let count = a.count.min(export.config().nfs.max_read) as usize;
    let (content, size) = {
        let m = node.meta();
        (m.content.clone(), m.size)
    };
    if a.offset >= size {
        // At or past the end: no data, and eof.
        return Ok(ReadOk {
            data: bytes::Bytes::new(),
            eof: true,
        });
    }
    let Some(path) = content.as_deref() else {
        let err = std::io::Error::new(std::io::ErrorKind::NotFound, "no aliases_json.path");
        export.report_missing(node, &err);
        return Err(Nfs3Status::Io);
    };
    let file = export.files().get(node.fileid, path).map_err(|e| {
        export.report_missing(node, &e);
        Nfs3Status::Io
    })?;
    let (data, eof) = export
        .files()
        .read_at(&file, a.offset, count)
        .map_err(|e| {
            tracing::error!(node = %node.id, offset = a.offset, count, error = %e, "NFSv3 READ failed");
            Nfs3Status::Io
        })?;
    let eof = eof || a.offset.saturating_add(data.len() as u64) >= size;
    Ok(ReadOk { data, eof })
}

pub fn write(call: &Call<'_>, a: &WriteArgs<'_>) -> WccAnswer<WriteOk> {
    call.with_wcc(a.fh, |node| write_node(call, node, a))
}

fn write_node(call: &Call<'_>, node: &Arc<Node>, a: &WriteArgs<'_>) -> Nfs3Result<WriteOk> {
    regular_file(node)?;
    if a.stable > super::args::FILE_SYNC {
        return Err(Nfs3Status::Inval);
    }
    // `count` and the data's length must agree (RFC 1813 §3.3.7).
    let len = a.data.len();
    if a.count as usize != len {
        return Err(Nfs3Status::Inval);
    }
    let end = a
        .offset
        .checked_add(len as u64)
        .filter(|e| *e <= i64::MAX as u64)
        .ok_or(Nfs3Status::FBig)?;
    call.require(node, WRITE)?;
    let export = call.export;
    let path = node.meta().content.clone().ok_or(Nfs3Status::Io)?;
    let files = export.files();
    let file = files.get_writable(node.fileid, &path).map_err(|e| {
        tracing::warn!(node = %node.id, path = %path.display(), error = %e, "NFSv3 WRITE cannot open content");
        io_status(&e)
    })?;
    let synced = a.stable != UNSTABLE;
    match &a.data {
        Payload::Bytes(data) if synced => files.write_stable(&file, a.offset, data),
        Payload::Bytes(data) => files.write_at(&file, a.offset, data),
        Payload::Pipe(bulk) => files.write_from_pipes(&file, a.offset, &bulk.pipes, bulk.len),
    }
    .map_err(|e| {
        tracing::error!(node = %node.id, offset = a.offset, len, error = %e, "NFSv3 WRITE failed");
        io_status(&e)
    })?;
    // A zero-length WRITE changes nothing.
    if len > 0 {
        export.catalog().data_written(node, end);
    }
    if synced && matches!(a.data, Payload::Pipe(_)) {
        files.sync(&file).map_err(|e| {
            tracing::error!(node = %node.id, error = %e, "NFSv3 WRITE sync failed");
            io_status(&e)
        })?;
    }
    Ok(WriteOk {
        count: len as u32,
        committed: if synced {
            super::args::FILE_SYNC
        } else {
            UNSTABLE
        },
    })
}

/// Puts everything written to the file on stable storage (the whole file:
/// fdatasync has no range form that also covers the size).
pub fn commit(call: &Call<'_>, a: &CommitArgs<'_>) -> WccAnswer<()> {
    call.with_wcc(a.fh, |node| {
        regular_file(node)?;
        if a.offset.checked_add(a.count as u64).is_none() {
            return Err(Nfs3Status::Inval);
        }
        let path = node.meta().content.clone().ok_or(Nfs3Status::Io)?;
        let files = call.export.files();
        let file = files.get(node.fileid, &path).map_err(|e| io_status(&e))?;
        files.sync(&file).map_err(|e| {
            tracing::error!(node = %node.id, error = %e, "NFSv3 COMMIT sync failed");
            io_status(&e)
        })
    })
}
