//! COMPOUND (RFC 7530 §15.2): runs the operations in order with a current
//! and a saved file handle, stopping at the first failure.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use super::awaited::{ended_at, OpAt, ReplyShape};
use super::consts::{op, OpResult, Status, NFS4_FHSIZE, NFS4_OPAQUE_LIMIT};
use super::ops;
use super::server::Nfs4Server;
use super::view::catalog_status;
use super::view::ExportView;
use crate::catalog::{Node, Pending};
use crate::export::held_reply::{AfterDurable, Awaited};
use crate::rpc::duplicates::Claim;
use crate::rpc::{AcceptError, BulkArgument, CallContext, CallKey, ReplyBody};
use crate::xdr::Decoder;

/// The evaluation state of one COMPOUND.
pub(crate) struct Compound<'a> {
    pub prog: &'a Nfs4Server,
    /// The export of the current filehandle (the first export until a
    /// PUTFH, LOOKUP or RESTOREFH moves into another).
    pub srv: &'a ExportView,
    pub ctx: &'a CallContext,
    pub current: Option<Arc<Node>>,
    /// The current filehandle is the pseudo-root (`current` is then None).
    pub at_pseudo_root: bool,
    pub saved: Saved<'a>,
    /// The operation running: its number, where its result begins in the
    /// reply, and the results up to and with it.
    op_at: Cell<OpAt>,
    /// Changes the reply waits for (see `export::held_reply`).
    awaited: RefCell<Awaited<OpAt>>,
}

/// The saved filehandle (SAVEFH), with the export it is in.
#[derive(Clone)]
pub(crate) enum Saved<'a> {
    None,
    PseudoRoot,
    Node(&'a ExportView, Arc<Node>),
}

impl<'a> Compound<'a> {
    /// Makes `node` of `view` the current filehandle.
    pub fn enter(&mut self, view: &'a ExportView, node: Arc<Node>) {
        self.srv = view;
        self.current = Some(node);
        self.at_pseudo_root = false;
    }

    /// Makes the pseudo-root the current filehandle.
    pub fn enter_pseudo_root(&mut self) {
        self.current = None;
        self.at_pseudo_root = true;
    }

    /// Whether a saved filehandle is in another file system than the
    /// current one: another export, or one of them the pseudo-root (RENAME
    /// and LINK cannot cross: XDEV).
    pub fn crosses_exports(&self) -> bool {
        match &self.saved {
            Saved::None => false,
            Saved::PseudoRoot => true,
            Saved::Node(view, _) => !std::ptr::eq(self.srv, *view) || self.at_pseudo_root,
        }
    }

    /// The saved filehandle's node, or NOFILEHANDLE.
    pub fn saved_node(&self) -> OpResult<Arc<Node>> {
        match &self.saved {
            Saved::Node(_, node) => Ok(node.clone()),
            _ => Err(Status::NoFileHandle),
        }
    }

    /// The current filehandle's node, or NOFILEHANDLE.
    pub fn current(&self) -> OpResult<Arc<Node>> {
        self.current.clone().ok_or(Status::NoFileHandle)
    }

    /// Lets the COMPOUND go on while `pending` commits: the reply is sent
    /// once it is durable, and `after` runs then (see `export::held_reply`).
    pub fn reply_after(&self, pending: Pending, after: Option<AfterDurable>) {
        self.awaited
            .borrow_mut()
            .push(pending, after, self.op_at.get());
    }

    /// The caller, as attributes are shown to it.
    pub fn viewer(&self) -> super::attrs::Viewer {
        super::attrs::Viewer::of(&self.ctx.credentials)
    }
}

/// Reply bytes beyond one READ's data a COMPOUND may use (attributes,
/// handles, names of the other operations).
const REPLY_SLACK: usize = 64 << 10;

/// Runs a COMPOUND, which `key` names in the duplicate request cache.
/// Before its first non-idempotent operation (CREATE, REMOVE, RENAME,
/// LINK) it claims the key, and returns the claim: its reply is kept for
/// retransmissions. If another sending of it claimed first, that one's
/// reply is this one's.
pub(crate) fn run(
    prog: &Nfs4Server,
    ctx: &CallContext,
    args: &[u8],
    out: &mut ReplyBody,
    key: CallKey,
) -> Result<Option<Claim>, AcceptError> {
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
        return Ok(None);
    }
    if count > prog.config().nfs.max_ops_per_compound {
        crate::rpc::complaints::Complaints::global().warn(
            ctx.peer.map(|p| p.ip()),
            "COMPOUND with too many operations",
            &count,
        );
        out.patch_u32(status_at, Status::Resource.code());
        return Ok(None);
    }
    if count > 0 && !prog.admits(ctx.peer) {
        // A machine no export serves: its first operation answers ACCESS,
        // so its mount fails with "Permission denied" at once.
        let opnum = d.u32().ok().filter(|n| ops::is_known(*n));
        out.enc().u32(opnum.unwrap_or(op::ILLEGAL));
        out.enc().u32(Status::Access.code());
        out.patch_u32(status_at, Status::Access.code());
        out.patch_u32(count_at, 1);
        return Ok(None);
    }
    let mut claim = None;
    let first = prog.primary();
    let mut c = Compound {
        prog,
        srv: first,
        ctx,
        current: None,
        at_pseudo_root: false,
        saved: Saved::None,
        op_at: Cell::new(OpAt::default()),
        awaited: RefCell::default(),
    };
    let mut results = 0u32;
    let mut status = Status::Ok;
    // In place, the catalog answers from memory only until an operation
    // has changed state (from then on the COMPOUND is answered here, and
    // a rare load of what it just used is read here too). Latencies are
    // recorded once the COMPOUND is answered, so one sent on to a thread
    // is not counted twice.
    let mut memory_only = ctx.in_place.then(crate::catalog::MemoryOnly::enter);
    let mut timed = Vec::new();
    // One COMPOUND's reply carries at most about one READ's worth: the
    // transport budgets replies by their first READ (see
    // `Program::reply_data_hint`), so a COMPOUND of many READs is refused
    // past it rather than let grow.
    let reply_cap = out.len() + prog.config().nfs.max_read as usize + REPLY_SLACK;
    for _ in 0..count {
        if out.len() > reply_cap {
            out.enc().u32(d.u32().unwrap_or(op::ILLEGAL));
            out.enc().u32(Status::Resource.code());
            results += 1;
            status = Status::Resource;
            break;
        }
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
        if ctx.in_place && !ops::runs_in_place(opnum) {
            return Err(AcceptError::NeedsThread);
        }
        if claim.is_none() && matches!(opnum, op::CREATE | op::REMOVE | op::RENAME | op::LINK) {
            match prog.replies.claim(key) {
                Ok(c) => claim = Some(c),
                // Another sending got here first: its reply is this one's.
                // What ran before changed nothing that reply does not show.
                // (A READ's data part already in the reply: run on.)
                Err(earlier) => {
                    if out.truncate(status_at) {
                        earlier.answer(out);
                        return Ok(None);
                    }
                }
            }
        }
        c.op_at.set(OpAt {
            opnum,
            result_at: out.len(),
            results: results + 1,
        });
        out.enc().u32(opnum);
        let op_status_at = out.placeholder();
        let body_at = out.len();
        results += 1;
        let started = std::time::Instant::now();
        let result = ops::dispatch(&mut c, opnum, &mut d, out);
        if memory_only.as_ref().is_some_and(|m| m.missed()) {
            return Err(AcceptError::NeedsThread);
        }
        if ops::changes_state_only(opnum) {
            memory_only = None;
        }
        timed.push((opnum, started.elapsed(), result.is_err()));
        if let Err(s) = result {
            // LOCK and LOCKT answer DENIED with the conflicting lock.
            let keep_body = s == Status::Denied && matches!(opnum, op::LOCK | op::LOCKT);
            if !keep_body && !out.truncate(body_at) {
                tracing::error!(opnum, "failed op had already emitted data");
            }
            out.patch_u32(op_status_at, s.code());
            for &word in failure_words(opnum, s) {
                out.enc().u32(word);
            }
            tracing::debug!(opnum, status = ?s, xid = ctx.xid, "operation failed");
            if s == Status::ServerFault {
                tracing::warn!(opnum, node = ?c.current.as_ref().map(|n| &n.id), "operation failed: {s:?}");
            }
            status = s;
            break;
        }
    }
    for (opnum, took, failed) in timed {
        prog.latency.record(opnum, took);
        if failed {
            prog.latency.record_error(opnum);
        }
    }
    out.patch_u32(status_at, status.code());
    out.patch_u32(count_at, results);
    let awaited = c.awaited.into_inner();
    if !awaited.is_empty() {
        let shape = ReplyShape {
            status_at,
            count_at,
        };
        out.hold(awaited.hold(Box::new(move |reply, op, e| {
            ended_at(reply, shape, op, catalog_status(e))
        })));
    }
    Ok(claim)
}

/// What a failed operation's result carries after its status (besides
/// LOCK's and LOCKT's DENIED, which keep the body they encoded).
pub(crate) fn failure_words(opnum: u32, status: Status) -> &'static [u32] {
    match (opnum, status) {
        // SETATTR4res carries its attrsset bitmap even on error.
        (op::SETATTR, _) => &[0],
        // The CLID_INUSE arm names the address in use (r_netid, r_addr);
        // callback addresses are not kept, so both are empty.
        (op::SETCLIENTID, Status::ClidInUse) => &[0, 0],
        _ => &[],
    }
}

/// Where the data of a streaming WRITE lies in COMPOUND arguments, judged
/// from their head: `(offset, length)`. Only the shape clients use to
/// stream — PUTFH, then WRITE, then anything — is recognised (Linux and
/// macOS send PUTFH, WRITE, GETATTR); `run` decodes the same bytes the same
/// way, so the WRITE found here is the first WRITE it executes. The order
/// key is a hash of the file handle: WRITEs of one file wait for each
/// other on the file anyway.
pub(crate) fn locate_write_data(args: &[u8], max_write: usize) -> Option<BulkArgument> {
    let mut d = Decoder::new(args);
    d.opaque(NFS4_OPAQUE_LIMIT).ok()?; // tag
    if d.u32().ok()? != 0 || d.u32().ok()? < 2 {
        return None; // minor version, operation count
    }
    if d.u32().ok()? != op::PUTFH {
        return None;
    }
    let fh = d.opaque(NFS4_FHSIZE).ok()?;
    if d.u32().ok()? != op::WRITE {
        return None;
    }
    d.skip(16 + 8).ok()?; // stateid, offset
    if d.u32().ok()? != 0 {
        // FILE_SYNC / DATA_SYNC payloads stay in the record: they are
        // written with a sync of their own range (storage.file_sync).
        return None;
    }
    let len = d.u32().ok()? as usize;
    (len <= max_write).then(|| BulkArgument {
        at: d.position(),
        len,
        order: order_key(fh),
    })
}

/// Whether COMPOUND arguments are the shape of a data call: PUTFH, then
/// READ, WRITE or COMMIT (what Linux and macOS send for file data).
pub(crate) fn moves_data(args: &[u8]) -> bool {
    let mut d = Decoder::new(args);
    matches!(data_op(&mut d), Some(op::READ | op::WRITE | op::COMMIT))
}

/// The operation after a leading PUTFH, the decoder left at its arguments.
fn data_op(d: &mut Decoder<'_>) -> Option<u32> {
    d.opaque(NFS4_OPAQUE_LIMIT).ok()?; // tag
    if d.u32().ok()? != 0 || d.u32().ok()? < 2 || d.u32().ok()? != op::PUTFH {
        return None;
    }
    d.opaque(NFS4_FHSIZE).ok()?;
    d.u32().ok()
}

/// The count of a PUTFH + READ COMPOUND's READ (what its reply carries at
/// most), from the head of its arguments.
pub(crate) fn read_count(args: &[u8]) -> Option<u32> {
    let mut d = Decoder::new(args);
    if data_op(&mut d)? != op::READ {
        return None;
    }
    d.fixed(16).ok()?; // stateid
    d.u64().ok()?; // offset
    d.u32().ok()
}

/// FNV-1a of a file handle (as NFSv3's WRITEs are keyed): cheap, and only
/// ever compared on one connection.
fn order_key(fh: &[u8]) -> u64 {
    crate::catalog::fnv1a(fh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdr::Encoder;

    /// An operation number and the encoder of its arguments.
    type Op<'a> = (u32, &'a dyn Fn(&mut Encoder));

    fn compound(tag: &str, minor: u32, ops: &[Op<'_>]) -> Vec<u8> {
        let mut e = Encoder::new();
        e.string(tag);
        e.u32(minor);
        e.u32(ops.len() as u32);
        for (opnum, body) in ops {
            e.u32(*opnum);
            body(&mut e);
        }
        e.buf
    }

    fn putfh(e: &mut Encoder) {
        e.opaque(&[7u8; 26]);
    }

    fn write(e: &mut Encoder) {
        e.fixed(&[1u8; 16]);
        e.u64(1 << 30);
        e.u32(0);
        e.opaque(&[0xa5; 1000]);
    }

    fn getattr(e: &mut Encoder) {
        e.u32(1);
        e.u32(0x18);
    }

    #[test]
    fn write_data_is_found_after_putfh() {
        let args = compound(
            "w",
            0,
            &[
                (op::PUTFH, &putfh),
                (op::WRITE, &write),
                (op::GETATTR, &getattr),
            ],
        );
        let found = locate_write_data(&args, 1 << 20).unwrap();
        let (at, len) = (found.at, found.len);
        assert_eq!(len, 1000);
        assert_eq!(&args[at..at + len], &[0xa5; 1000][..]);
        assert_eq!(found.order, order_key(&[7u8; 26]));
        // The head alone is enough.
        assert_eq!(locate_write_data(&args[..at], 1 << 20), Some(found));
        assert_eq!(locate_write_data(&args[..at - 1], 1 << 20), None);
        // Another file, another order key.
        let other = compound(
            "w",
            0,
            &[
                (op::PUTFH, &|e: &mut Encoder| e.opaque(&[8u8; 26])),
                (op::WRITE, &write),
            ],
        );
        assert_ne!(
            locate_write_data(&other, 1 << 20).unwrap().order,
            found.order
        );
    }

    #[test]
    fn data_calls_are_told_from_metadata_calls() {
        let write = compound("", 0, &[(op::PUTFH, &putfh), (op::WRITE, &write)]);
        let read = compound("", 0, &[(op::PUTFH, &putfh), (op::READ, &getattr)]);
        let stat = compound("", 0, &[(op::PUTFH, &putfh), (op::GETATTR, &getattr)]);
        let alone = compound("", 0, &[(op::PUTFH, &putfh)]);
        assert!(moves_data(&write));
        assert!(moves_data(&read));
        assert!(!moves_data(&stat));
        assert!(!moves_data(&alone));
        assert!(!moves_data(b"junk"));
    }

    #[test]
    fn other_shapes_are_not_located() {
        let max = 1 << 20;
        let no_putfh = compound("", 0, &[(op::WRITE, &write), (op::GETATTR, &getattr)]);
        assert_eq!(locate_write_data(&no_putfh, max), None);
        let minor1 = compound("", 1, &[(op::PUTFH, &putfh), (op::WRITE, &write)]);
        assert_eq!(locate_write_data(&minor1, max), None);
        let read = compound("", 0, &[(op::PUTFH, &putfh), (op::READ, &getattr)]);
        assert_eq!(locate_write_data(&read, max), None);
        let too_big = compound("", 0, &[(op::PUTFH, &putfh), (op::WRITE, &write)]);
        assert_eq!(locate_write_data(&too_big, 999), None);
        let one_op = compound("", 0, &[(op::PUTFH, &putfh)]);
        assert_eq!(locate_write_data(&one_op, max), None);
    }
}
