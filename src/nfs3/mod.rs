//! NFSv3 (RFC 1813) over the same export as NFSv4: the same catalog,
//! storage, file handles and write verifier. Each procedure's arguments
//! are decoded into a typed struct (`args`) before its handler runs, and
//! each handler (`info`, `names`, `dirs`, `data`) returns a typed result
//! that `reply` encodes, so handlers are tested without XDR. Speaks XDR to
//! the RPC layer and calls the export; nothing of NFSv4 is used here.

pub mod args;
mod data;
mod dirs;
mod info;
mod names;
pub mod reply;

use std::cell::RefCell;
use std::sync::Arc;

use crate::catalog::{fnv1a, CatalogError, Node, Pending};
use crate::export::held_reply::{AfterDurable, Awaited};
use crate::export::permission::{self, Denied};
use crate::export::{handle, handle::NFS3_FHSIZE, Export, Exports, HandleError, NodeError};
use crate::metrics::ops::OpLatency;
use crate::rpc::{
    AcceptError, BulkArgument, CallContext, Credentials, DuplicateReplies, Program, ReplyBody,
};
use crate::xdr::{Decoder, Encoder};

pub use args::*;

pub const NFS3_PROGRAM: u32 = 100003;
pub const NFS3_VERSION: u32 = 3;

/// Procedure numbers (RFC 1813 §3).
pub mod proc3 {
    pub const NULL: u32 = 0;
    pub const GETATTR: u32 = 1;
    pub const SETATTR: u32 = 2;
    pub const LOOKUP: u32 = 3;
    pub const ACCESS: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const READ: u32 = 6;
    pub const WRITE: u32 = 7;
    pub const CREATE: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const SYMLINK: u32 = 10;
    pub const MKNOD: u32 = 11;
    pub const REMOVE: u32 = 12;
    pub const RMDIR: u32 = 13;
    pub const RENAME: u32 = 14;
    pub const LINK: u32 = 15;
    pub const READDIR: u32 = 16;
    pub const READDIRPLUS: u32 = 17;
    pub const FSSTAT: u32 = 18;
    pub const FSINFO: u32 = 19;
    pub const PATHCONF: u32 = 20;
    pub const COMMIT: u32 = 21;
}

/// A procedure's name, as the latency report and metrics show it.
pub fn proc_name(procedure: u32) -> &'static str {
    use proc3::*;
    match procedure {
        GETATTR => "GETATTR",
        SETATTR => "SETATTR",
        LOOKUP => "LOOKUP",
        ACCESS => "ACCESS",
        READLINK => "READLINK",
        READ => "READ",
        WRITE => "WRITE",
        CREATE => "CREATE",
        MKDIR => "MKDIR",
        SYMLINK => "SYMLINK",
        MKNOD => "MKNOD",
        REMOVE => "REMOVE",
        RMDIR => "RMDIR",
        RENAME => "RENAME",
        LINK => "LINK",
        READDIR => "READDIR",
        READDIRPLUS => "READDIRPLUS",
        FSSTAT => "FSSTAT",
        FSINFO => "FSINFO",
        PATHCONF => "PATHCONF",
        COMMIT => "COMMIT",
        _ => "other",
    }
}

/// nfsstat3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Nfs3Status {
    Ok = 0,
    Perm = 1,
    NoEnt = 2,
    Io = 5,
    Acces = 13,
    Exist = 17,
    /// RENAME between two exports.
    XDev = 18,
    NotDir = 20,
    IsDir = 21,
    Inval = 22,
    FBig = 27,
    NoSpc = 28,
    /// A change to a read-only export.
    RoFs = 30,
    /// Too many hard links: LINK, where a node's limit is its one name.
    MLink = 31,
    NameTooLong = 63,
    NotEmpty = 66,
    DQuot = 69,
    Stale = 70,
    BadHandle = 10001,
    NotSync = 10002,
    BadCookie = 10003,
    NotSupp = 10004,
    TooSmall = 10005,
    ServerFault = 10006,
    BadType = 10007,
    /// Try again later (RFC 1813's NFS3ERR_JUKEBOX).
    Jukebox = 10008,
}

impl Nfs3Status {
    pub fn code(self) -> u32 {
        self as u32
    }
}

pub type Nfs3Result<T> = Result<T, Nfs3Status>;

/// How a catalog failure looks to an NFSv3 client.
pub(crate) fn catalog_status(e: &CatalogError) -> Nfs3Status {
    match e {
        CatalogError::NotFound(_) => Nfs3Status::Stale,
        CatalogError::NotFolder(_) => Nfs3Status::NotDir,
        CatalogError::Exists { .. } => Nfs3Status::Exist,
        CatalogError::NotEmpty(_) => Nfs3Status::NotEmpty,
        CatalogError::IntoItself(_) => Nfs3Status::Inval,
        CatalogError::TypeMismatch(_) => Nfs3Status::Exist,
        // Never sent: the call is run again where it may load.
        CatalogError::NotInMemory(_) => Nfs3Status::Jukebox,
        CatalogError::Sql { .. } | CatalogError::Commit(_) => {
            tracing::error!(error = %e, "catalog error (NFSv3)");
            Nfs3Status::ServerFault
        }
    }
}

pub(crate) fn io_status(e: &std::io::Error) -> Nfs3Status {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => Nfs3Status::Acces,
        _ if e.raw_os_error() == Some(libc::ENOSPC) => Nfs3Status::NoSpc,
        _ if e.raw_os_error() == Some(libc::EDQUOT) => Nfs3Status::DQuot,
        _ if e.raw_os_error() == Some(libc::EFBIG) => Nfs3Status::FBig,
        _ => Nfs3Status::Io,
    }
}

fn denied_status(d: Denied) -> Nfs3Status {
    match d {
        Denied::Access => Nfs3Status::Acces,
        Denied::Perm => Nfs3Status::Perm,
    }
}

/// What a handler sees of its call: the export and who is calling, and
/// the changes its reply waits for.
pub struct Call<'a> {
    pub export: &'a Arc<Export>,
    pub cred: &'a Credentials,
    awaited: RefCell<Awaited<()>>,
}

impl<'a> Call<'a> {
    pub fn new(export: &'a Arc<Export>, cred: &'a Credentials) -> Call<'a> {
        Call {
            export,
            cred,
            awaited: RefCell::default(),
        }
    }

    /// Lets the call finish while `pending` commits: its reply is sent once
    /// the change is durable, and `after` runs then (see
    /// `export::held_reply`).
    pub fn reply_after(&self, pending: Pending, after: Option<AfterDurable>) {
        self.awaited.borrow_mut().push(pending, after, ());
    }
}

impl Call<'_> {
    /// NFS3ERR_XDEV when `fh` is a handle of another export (a call is run
    /// by the export its first handle names); else the node, as [`node`].
    ///
    /// [`node`]: Call::node
    pub fn node_here(&self, fh: &[u8]) -> Nfs3Result<Arc<Node>> {
        match handle::owner_of(fh) {
            Ok(handle::Owner::Export(id)) if id != self.export.config().export.export_id => {
                Err(Nfs3Status::XDev)
            }
            _ => self.node(fh),
        }
    }

    /// The node a handle names.
    pub fn node(&self, fh: &[u8]) -> Nfs3Result<Arc<Node>> {
        self.export.node_of_handle(fh).map_err(|e| match e {
            NodeError::Handle(HandleError::BadHandle) => Nfs3Status::BadHandle,
            NodeError::Handle(HandleError::Stale) => Nfs3Status::Stale,
            NodeError::Catalog(c) => catalog_status(&c),
        })
    }

    /// NFS3ERR_ACCES unless the caller has `want` on `node` (see
    /// [`permission::require`]).
    pub fn require(&self, node: &Node, want: u32) -> Nfs3Result<()> {
        permission::require(self.export, node, self.cred, want).map_err(denied_status)
    }

    pub fn require_owner(&self, node: &Node) -> Nfs3Result<()> {
        permission::require_owner(self.export, node, self.cred).map_err(denied_status)
    }

    /// Runs `f` on the node `fh` names; the answer carries the node's
    /// attributes (post_op_attr) whether `f` succeeds or not.
    pub fn answer<T>(
        &self,
        fh: &[u8],
        f: impl FnOnce(&Arc<Node>) -> Nfs3Result<T>,
    ) -> reply::Answer<T> {
        match self.node(fh) {
            Ok(n) => reply::Answer {
                result: f(&n),
                attrs: Some(n),
            },
            Err(s) => reply::Answer::failed(s, None),
        }
    }

    /// Runs `f` on the node `fh` names; the answer carries its wcc_data
    /// (attributes before and after `f`).
    pub fn with_wcc<T>(
        &self,
        fh: &[u8],
        f: impl FnOnce(&Arc<Node>) -> Nfs3Result<T>,
    ) -> reply::WccAnswer<T> {
        match self.node(fh) {
            Ok(n) => {
                let wcc = reply::Wcc::before(&n);
                reply::WccAnswer { result: f(&n), wcc }
            }
            Err(s) => reply::WccAnswer {
                result: Err(s),
                wcc: reply::Wcc::default(),
            },
        }
    }
}

pub struct Nfs3Server {
    /// A call goes to the export its first file handle names.
    exports: Exports,
    /// Per-procedure latency and errors.
    pub latency: OpLatency,
    /// Duplicate request cache for the procedures that change the
    /// namespace: a retransmission (after a reconnect) gets the original
    /// answer instead of a spurious NOENT or EXIST.
    replies: DuplicateReplies,
}

impl Nfs3Server {
    pub fn serving(exports: Exports) -> Nfs3Server {
        let entries = exports[0].config().nfs.reply_cache_entries.max(1);
        Nfs3Server {
            exports,
            latency: OpLatency::new(22, proc_name),
            replies: DuplicateReplies::new(entries),
        }
    }

    /// The export a call is for: the one whose id its first file handle
    /// (every procedure's first argument) carries. A handle of no export
    /// goes to the first, whose decoding answers BADHANDLE or STALE.
    fn export_of_call(&self, args: &[u8]) -> &Arc<Export> {
        let first = &self.exports[0];
        if self.exports.len() == 1 {
            return first;
        }
        Decoder::new(args)
            .opaque(NFS3_FHSIZE)
            .ok()
            .and_then(|fh| self.exports.of_handle(fh))
            .unwrap_or(first)
    }
}

/// Procedures that change the export (ROFS on a read-only one).
fn changes(procedure: u32) -> bool {
    use proc3::*;
    non_idempotent(procedure) || matches!(procedure, SETATTR | WRITE)
}

/// Procedures whose retransmission must not run twice.
fn non_idempotent(procedure: u32) -> bool {
    use proc3::*;
    matches!(
        procedure,
        CREATE | MKDIR | SYMLINK | MKNOD | REMOVE | RMDIR | RENAME | LINK
    )
}

impl Program for Nfs3Server {
    fn number(&self) -> u32 {
        NFS3_PROGRAM
    }

    fn versions(&self) -> (u32, u32) {
        (NFS3_VERSION, NFS3_VERSION)
    }

    fn bulk_argument(
        &self,
        version: u32,
        procedure: u32,
        args_head: &[u8],
    ) -> Option<BulkArgument> {
        if version != NFS3_VERSION || procedure != proc3::WRITE {
            return None;
        }
        args::locate_write_data(args_head, self.exports[0].config().nfs.max_write as usize)
    }

    fn may_run_in_place(&self, version: u32, procedure: u32) -> bool {
        // Procedures that change nothing and read the catalog's memory
        // (the call goes to a thread if what it needs is not there).
        use proc3::*;
        version == NFS3_VERSION
            && matches!(
                procedure,
                NULL | GETATTR | LOOKUP | ACCESS | FSSTAT | FSINFO | PATHCONF
            )
    }

    fn is_data_call(&self, version: u32, procedure: u32, _args_head: &[u8]) -> bool {
        version == NFS3_VERSION && matches!(procedure, proc3::READ | proc3::WRITE | proc3::COMMIT)
    }

    fn reply_data_hint(&self, version: u32, procedure: u32, args_head: &[u8]) -> u32 {
        if version != NFS3_VERSION {
            return 0;
        }
        let mut d = Decoder::new(args_head);
        let count = (|| match procedure {
            // READ3args: file, offset, count.
            proc3::READ => {
                d.opaque(NFS3_FHSIZE).ok()?;
                d.u64().ok()?;
                d.u32().ok()
            }
            // READDIR3args: dir, cookie, verifier, count; READDIRPLUS3args
            // then dircount and maxcount.
            proc3::READDIR | proc3::READDIRPLUS => {
                d.opaque(NFS3_FHSIZE).ok()?;
                d.u64().ok()?;
                d.fixed(8).ok()?;
                let count = d.u32().ok()?;
                if procedure == proc3::READDIR {
                    Some(count)
                } else {
                    d.u32().ok()
                }
            }
            _ => None,
        })();
        count.map_or(0, |c| c.min(self.exports[0].config().nfs.max_read))
    }

    fn call(&self, ctx: &CallContext, args: &[u8], out: &mut ReplyBody) -> Result<(), AcceptError> {
        if ctx.procedure == proc3::NULL {
            return Ok(());
        }
        let export = self.export_of_call(args);
        let refusal = if export.admit(ctx.peer).is_err() {
            Some(Nfs3Status::Acces)
        } else if export.read_only() && changes(ctx.procedure) {
            Some(Nfs3Status::RoFs)
        } else {
            None
        };
        if let Some(status) = refusal {
            return if reply::refused(out.enc(), ctx.procedure, status) {
                Ok(())
            } else {
                Err(AcceptError::ProcUnavail)
            };
        }
        let cacheable = non_idempotent(ctx.procedure);
        let key = cacheable.then(|| {
            (
                ctx.caller_key(),
                ctx.xid,
                fnv1a(args) ^ ctx.procedure as u64,
            )
        });
        // Claimed before the call changes anything: a retransmission from
        // now on waits for this sending's reply.
        let claim = match key.map(|k| self.replies.claim(k)) {
            Some(Err(earlier)) => {
                earlier.answer(out);
                return Ok(());
            }
            Some(Ok(claim)) => Some(claim),
            None => None,
        };
        let start = out.len();
        let call = Call::new(export, &ctx.credentials);
        let mut d = Decoder::new(args);
        let memory_only = ctx.in_place.then(crate::catalog::MemoryOnly::enter);
        let started = std::time::Instant::now();
        dispatch(&call, ctx, &mut d, out)?;
        if memory_only.is_some_and(|m| m.missed()) {
            return Err(AcceptError::NeedsThread);
        }
        self.latency.record(ctx.procedure, started.elapsed());
        if out.u32_at(start).is_some_and(|status| status != 0) {
            self.latency.record_error(ctx.procedure);
        }
        let awaited = call.awaited.into_inner();
        if !awaited.is_empty() {
            // A change that cannot be made durable fails the procedure,
            // with its failure arm's attributes absent.
            let procedure = ctx.procedure;
            out.hold(awaited.hold(Box::new(move |reply, (), e| {
                let mut failed = Encoder::with_buffer(reply.prefix(start));
                reply::refused(&mut failed, procedure, catalog_status(e));
                failed.buf.into()
            })));
        }
        if let Some(claim) = claim {
            claim.finish(out, start);
        }
        Ok(())
    }
}

/// Decodes a procedure's arguments, runs its handler and encodes its
/// result. Arguments that do not decode are GARBAGE_ARGS.
fn dispatch<'a>(
    call: &Call<'_>,
    ctx: &'a CallContext,
    d: &mut Decoder<'a>,
    out: &mut ReplyBody,
) -> Result<(), AcceptError> {
    use proc3::*;
    let garbage = |_| AcceptError::GarbageArgs;
    match ctx.procedure {
        GETATTR => {
            let a = FhArgs::decode(d).map_err(garbage)?;
            reply::getattr(call, out, info::getattr(call, &a));
        }
        SETATTR => {
            let a = SetattrArgs::decode(d).map_err(garbage)?;
            reply::wcc_only(call, out, info::setattr(call, &a));
        }
        LOOKUP => {
            let a = DirOpArgs::decode(d).map_err(garbage)?;
            reply::lookup(call, out, names::lookup(call, &a));
        }
        ACCESS => {
            let a = AccessArgs::decode(d).map_err(garbage)?;
            reply::access(call, out, info::access(call, &a));
        }
        READLINK => {
            let a = FhArgs::decode(d).map_err(garbage)?;
            reply::readlink(call, out, names::readlink(call, &a));
        }
        READ => {
            let a = ReadArgs::decode(d).map_err(garbage)?;
            reply::read(call, out, data::read(call, &a));
        }
        WRITE => {
            let a = WriteArgs::decode(d, ctx.bulk.as_deref(), call.export.config().nfs.max_write)
                .map_err(garbage)?;
            reply::write(call, out, data::write(call, &a));
        }
        CREATE => {
            let a = CreateArgs::decode(d).map_err(garbage)?;
            reply::created(call, out, names::create(call, &a));
        }
        MKDIR => {
            let a = MkdirArgs::decode(d).map_err(garbage)?;
            reply::created(call, out, names::mkdir(call, &a));
        }
        SYMLINK => {
            let a = SymlinkArgs::decode(d).map_err(garbage)?;
            reply::created(call, out, names::symlink(call, &a));
        }
        MKNOD => {
            let a = MknodArgs::decode(d).map_err(garbage)?;
            reply::created(call, out, names::mknod(call, &a));
        }
        REMOVE => {
            let a = DirOpArgs::decode(d).map_err(garbage)?;
            reply::wcc_only(call, out, names::remove(call, &a, false));
        }
        RMDIR => {
            let a = DirOpArgs::decode(d).map_err(garbage)?;
            reply::wcc_only(call, out, names::remove(call, &a, true));
        }
        RENAME => {
            let a = RenameArgs::decode(d).map_err(garbage)?;
            reply::rename(call, out, names::rename(call, &a));
        }
        LINK => {
            let a = LinkArgs::decode(d).map_err(garbage)?;
            reply::link(call, out, names::link(call, &a));
        }
        READDIR => {
            let a = ReaddirArgs::decode(d).map_err(garbage)?;
            reply::readdir(call, out, dirs::readdir(call, &a));
        }
        READDIRPLUS => {
            let a = ReaddirplusArgs::decode(d).map_err(garbage)?;
            reply::readdir(call, out, dirs::readdirplus(call, &a));
        }
        FSSTAT => {
            let a = FhArgs::decode(d).map_err(garbage)?;
            reply::fsstat(call, out, info::fsstat(call, &a));
        }
        FSINFO => {
            let a = FhArgs::decode(d).map_err(garbage)?;
            reply::fsinfo(call, out, info::fsinfo(call, &a));
        }
        PATHCONF => {
            let a = FhArgs::decode(d).map_err(garbage)?;
            reply::pathconf(call, out, info::pathconf(call, &a));
        }
        COMMIT => {
            let a = CommitArgs::decode(d).map_err(garbage)?;
            reply::commit(call, out, data::commit(call, &a));
        }
        _ => return Err(AcceptError::ProcUnavail),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
