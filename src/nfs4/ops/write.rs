//! WRITE and COMMIT. A WRITE's payload is a slice of the received record
//! handed straight to `pwrite` through a pooled descriptor, or, when the
//! transport spliced it into a pipe, spliced from there into the file; size, mtime and
//! change move in memory and the node is queued for the background writer,
//! so no SQL runs on this path.

use super::open::stateid;
use crate::nfs4::compound::Compound;
use crate::nfs4::consts::{OpResult, Status, OPEN4_SHARE_ACCESS_WRITE};
use crate::nfs4::permission;
use crate::rpc::{BulkData, ReplyBody};
use crate::xdr::Decoder;

const UNSTABLE4: u32 = 0;
const FILE_SYNC4: u32 = 2;

pub(crate) fn io_status(e: &std::io::Error) -> Status {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => Status::Access,
        std::io::ErrorKind::NotFound => Status::Io,
        _ if e.raw_os_error() == Some(libc::ENOSPC) => Status::NoSpc,
        _ if e.raw_os_error() == Some(libc::EDQUOT) => Status::DQuot,
        _ if e.raw_os_error() == Some(libc::EFBIG) => Status::FBig,
        _ => Status::Io,
    }
}

/// Where a WRITE's data is.
enum Payload<'a> {
    Bytes(&'a [u8]),
    Pipe(&'a BulkData),
}

impl Payload<'_> {
    fn len(&self) -> usize {
        match self {
            Payload::Bytes(b) => b.len(),
            Payload::Pipe(p) => p.len,
        }
    }
}

pub(crate) fn write(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let sid = stateid(d)?;
    let offset = d.u64()?;
    let stable = d.u32()?;
    // The payload is in the record, or — cut out of it by the transport —
    // in a pipe, when this is the WRITE the transport located.
    let payload = match c.ctx.bulk.as_deref() {
        Some(bulk) if bulk.at == d.position() + 4 => {
            if d.u32()? as usize != bulk.len {
                return Err(Status::ServerFault);
            }
            Payload::Pipe(bulk)
        }
        _ => Payload::Bytes(d.opaque(c.srv.config().nfs.max_write as usize)?),
    };
    let len = payload.len();
    if stable > FILE_SYNC4 {
        return Err(Status::Inval);
    }
    let node = c.current()?;
    super::regular_file(&node)?;
    let end = offset
        .checked_add(len as u64)
        .filter(|e| *e <= i64::MAX as u64)
        .ok_or(Status::FBig)?;
    c.srv.state.lock().check_io(
        &sid,
        c.srv.state_key(&node),
        OPEN4_SHARE_ACCESS_WRITE,
        c.ctx.peer,
        std::time::Instant::now(),
    )?;
    if sid.is_special() {
        // No open checked the caller's rights: check them here.
        permission::require(c.srv, &node, &c.ctx.credentials, permission::WRITE)?;
    }
    let path = node.meta().content.clone().ok_or(Status::Io)?;
    let file = c.srv.files().get_writable(node.fileid, &path).map_err(|e| {
        tracing::warn!(node = %node.id, path = %path.display(), error = %e, "WRITE cannot open content");
        io_status(&e)
    })?;
    let files = c.srv.files();
    let synced = stable != UNSTABLE4;
    match payload {
        // FILE_SYNC / DATA_SYNC: its own bytes made stable (storage.file_sync).
        Payload::Bytes(data) if synced => files.write_stable(&file, offset, data),
        Payload::Bytes(data) => files.write_at(&file, offset, data),
        Payload::Pipe(bulk) => files.write_from_pipes(&file, offset, &bulk.pipes, bulk.len),
    }
    .map_err(|e| {
        tracing::error!(node = %node.id, offset, len, error = %e, "WRITE failed");
        io_status(&e)
    })?;
    // A zero-length WRITE changes nothing: size and time_modify stay
    // (RFC 7530 §16.36.4).
    if len > 0 {
        c.srv.catalog().data_written(&node, end);
    }
    if synced && matches!(payload, Payload::Pipe(_)) {
        // The transport splices UNSTABLE payloads only; should a synced one
        // come this way, the whole file is synced.
        files.sync(&file).map_err(|e| {
            tracing::error!(node = %node.id, error = %e, "WRITE sync failed");
            io_status(&e)
        })?;
    }
    let e = out.enc();
    e.u32(len as u32);
    e.u32(stable);
    e.fixed(&c.srv.write_verifier());
    Ok(())
}

/// Puts everything written to the file on stable storage. The whole file
/// is synced whatever the range: fdatasync has no range form that also
/// covers the size.
pub(crate) fn commit(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let offset = d.u64()?;
    let count = d.u32()?;
    let node = c.current()?;
    super::regular_file(&node)?;
    if offset.checked_add(count as u64).is_none() {
        return Err(Status::Inval);
    }
    let path = node.meta().content.clone().ok_or(Status::Io)?;
    let files = c.srv.files();
    let file = files.get(node.fileid, &path).map_err(|e| io_status(&e))?;
    files.sync(&file).map_err(|e| {
        tracing::error!(node = %node.id, error = %e, "COMMIT sync failed");
        io_status(&e)
    })?;
    out.enc().fixed(&c.srv.write_verifier());
    Ok(())
}
