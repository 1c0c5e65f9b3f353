//! READ: the bytes come from a pooled descriptor with one pread and go out
//! as their own iovec, never copied into the reply buffer.

use super::open::stateid;
use crate::nfs4::compound::Compound;
use crate::nfs4::consts::{OpResult, Status, OPEN4_SHARE_ACCESS_READ};
use crate::nfs4::permission;
use crate::rpc::ReplyBody;
use crate::xdr::Decoder;

pub(crate) fn read(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let sid = stateid(d)?;
    let offset = d.u64()?;
    let count = d.u32()?;
    let node = c.current()?;
    super::regular_file(&node)?;
    c.srv.state.lock().check_io(
        &sid,
        c.srv.state_key(&node),
        OPEN4_SHARE_ACCESS_READ,
        c.ctx.peer,
        std::time::Instant::now(),
    )?;
    if sid.is_special() {
        // No open checked the caller's rights: check them here.
        permission::require(c.srv, &node, &c.ctx.credentials, permission::READ)?;
    }
    let count = count.min(c.srv.config().nfs.max_read) as usize;
    let (content, size) = {
        let m = node.meta();
        (m.content.clone(), m.size)
    };
    if offset >= size {
        // At or past the end (however far): no data, and eof, so a client
        // reading to the end stops (RFC 7530 §16.23).
        out.enc().bool(true);
        out.opaque_data(bytes::Bytes::new());
        return Ok(());
    }
    let Some(path) = content.as_deref() else {
        let err = std::io::Error::new(std::io::ErrorKind::NotFound, "no aliases_json.path");
        c.srv.report_missing(&node, &err);
        return Err(Status::Io);
    };
    let file = c.srv.files().get(node.fileid, path).map_err(|e| {
        c.srv.report_missing(&node, &e);
        Status::Io
    })?;
    let (data, eof) = c.srv.files().read_at(&file, offset, count).map_err(|e| {
        tracing::error!(node = %node.id, offset, count, error = %e, "READ failed");
        Status::Io
    })?;
    // Also eof when the bytes reach the end exactly: a READ of the whole
    // file needs no second READ to learn it.
    let eof = eof || offset.saturating_add(data.len() as u64) >= size;
    out.enc().bool(eof);
    out.opaque_data(data);
    Ok(())
}
