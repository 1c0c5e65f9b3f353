//! COMPOUND (RFC 7530 §15.2): runs the operations in order with a current
//! and a saved file handle, stopping at the first failure.

use std::sync::Arc;

use super::consts::{op, OpResult, Status, NFS4_OPAQUE_LIMIT};
use super::ops;
use super::server::Nfs4Server;
use crate::catalog::Node;
use crate::rpc::{AcceptError, CallContext, ReplyBody};
use crate::xdr::Decoder;

/// The evaluation state of one COMPOUND.
pub(crate) struct Compound<'a> {
    pub srv: &'a Nfs4Server,
    pub ctx: &'a CallContext,
    pub current: Option<Arc<Node>>,
    pub saved: Option<Arc<Node>>,
}

impl Compound<'_> {
    /// The current filehandle's node, or NOFILEHANDLE.
    pub fn current(&self) -> OpResult<Arc<Node>> {
        self.current.clone().ok_or(Status::NoFileHandle)
    }
}

/// Runs a COMPOUND; returns whether it ran a non-idempotent operation
/// (its reply then goes to the duplicate request cache).
pub(crate) fn run(
    srv: &Nfs4Server,
    ctx: &CallContext,
    args: &[u8],
    out: &mut ReplyBody,
) -> Result<bool, AcceptError> {
    let mut d = Decoder::new(args);
    let header = (|| {
        let tag = d.opaque(NFS4_OPAQUE_LIMIT)?;
        let minor = d.u32()?;
        let count = d.count(u32::MAX as usize, 4)?;
        Ok::<_, crate::xdr::XdrError>((tag, minor, count))
    })();
    let Ok((tag, minor, count)) = header else {
        return Err(AcceptError::GarbageArgs);
    };
    let status_at = out.placeholder();
    out.enc().opaque(tag);
    let count_at = out.placeholder();
    if minor != 0 {
        out.patch_u32(status_at, Status::MinorVersMismatch.code());
        return Ok(false);
    }
    if count > srv.config().nfs.max_ops_per_compound {
        tracing::warn!(count, "COMPOUND with too many operations");
        out.patch_u32(status_at, Status::Resource.code());
        return Ok(false);
    }
    let mut cacheable = false;
    let mut c = Compound {
        srv,
        ctx,
        current: None,
        saved: None,
    };
    let mut results = 0u32;
    let mut status = Status::Ok;
    for _ in 0..count {
        let opnum = match d.u32() {
            Ok(n) if ops::is_known(n) => n,
            Ok(_) | Err(_) => {
                // Unknown operation: one OP_ILLEGAL result ends the COMPOUND.
                out.enc().u32(op::ILLEGAL);
                out.enc().u32(Status::OpIllegal.code());
                results += 1;
                status = Status::OpIllegal;
                break;
            }
        };
        cacheable |= matches!(opnum, op::CREATE | op::REMOVE | op::RENAME | op::LINK);
        out.enc().u32(opnum);
        let op_status_at = out.placeholder();
        let body_at = out.len();
        results += 1;
        let started = std::time::Instant::now();
        let result = ops::dispatch(&mut c, opnum, &mut d, out);
        srv.latency.record(opnum, started.elapsed());
        if let Err(s) = result {
            // LOCK and LOCKT answer DENIED with the conflicting lock.
            let keep_body = s == Status::Denied && matches!(opnum, op::LOCK | op::LOCKT);
            if !keep_body && !out.truncate(body_at) {
                tracing::error!(opnum, "failed op had already emitted data");
            }
            out.patch_u32(op_status_at, s.code());
            if opnum == op::SETATTR {
                // SETATTR4res carries its attrsset bitmap even on error.
                out.enc().u32(0);
            }
            if opnum == op::SETCLIENTID && s == Status::ClidInUse {
                // The CLID_INUSE arm names the address in use (r_netid,
                // r_addr); callback addresses are not kept, so both are empty.
                out.enc().u32(0);
                out.enc().u32(0);
            }
            tracing::debug!(opnum, status = ?s, xid = ctx.xid, "operation failed");
            if s == Status::ServerFault {
                tracing::warn!(opnum, node = ?c.current.as_ref().map(|n| &n.id), "operation failed: {s:?}");
            }
            status = s;
            break;
        }
    }
    out.patch_u32(status_at, status.code());
    out.patch_u32(count_at, results);
    Ok(cacheable)
}
