//! One file per family of operations; `dispatch` routes an opnum to it.

mod attributes;
mod client;
pub(crate) mod directory;
mod filehandle;
mod lock;
mod namespace;
mod open;
mod read;
mod write;

use super::compound::Compound;
use super::consts::{op, OpResult, Status, MAX_NAME};
use super::state::OwnerKey;
use crate::catalog::{Node, NodeKind};
use crate::rpc::ReplyBody;
use crate::xdr::Decoder;

/// Operations of NFSv4.0 (3..=39); anything else is OP_ILLEGAL.
/// I/O (READ, WRITE, COMMIT, LOCK, SETATTR of the size) is for regular
/// files: ISDIR for a folder, INVAL for a symlink or special file
/// (RFC 7530 §16.23.5, §16.36.5).
pub(crate) fn regular_file(node: &Node) -> OpResult {
    match node.kind {
        NodeKind::File => Ok(()),
        NodeKind::Folder => Err(Status::IsDir),
        _ => Err(Status::Inval),
    }
}

/// OPEN is for regular files: ISDIR for a folder, SYMLINK for a symlink
/// (the client follows it itself), INVAL for a FIFO, socket or device
/// (clients open those locally, never through the server).
pub(crate) fn openable(node: &Node) -> OpResult {
    match node.kind {
        NodeKind::Symlink => Err(Status::Symlink),
        _ => regular_file(node),
    }
}

/// Whether an operation may run in place on a network thread (see
/// `Dispatcher::try_in_place`): it reads the catalog's memory and changes
/// nothing, or it changes the open state only ([`changes_state_only`]).
pub(crate) fn runs_in_place(opnum: u32) -> bool {
    matches!(
        opnum,
        op::PUTFH
            | op::PUTROOTFH
            | op::PUTPUBFH
            | op::GETFH
            | op::SAVEFH
            | op::RESTOREFH
            | op::LOOKUP
            | op::LOOKUPP
            | op::GETATTR
            | op::ACCESS
            | op::VERIFY
            | op::NVERIFY
            | op::SECINFO
    ) || changes_state_only(opnum)
}

/// Operations that change the open state in memory and nothing else
/// (CLOSE asks for a thread first if the file's content is to go with
/// it). Once one has run in place, the COMPOUND cannot be sent to a
/// thread any more.
pub(crate) fn changes_state_only(opnum: u32) -> bool {
    matches!(
        opnum,
        op::OPEN_CONFIRM | op::OPEN_DOWNGRADE | op::CLOSE | op::RENEW
    )
}

pub(crate) fn is_known(opnum: u32) -> bool {
    (op::ACCESS..=op::RELEASE_LOCKOWNER).contains(&opnum)
}

pub(crate) fn dispatch(
    c: &mut Compound<'_>,
    opnum: u32,
    d: &mut Decoder<'_>,
    out: &mut ReplyBody,
) -> OpResult {
    if c.at_pseudo_root {
        if let Some(result) = super::pseudo::dispatch(c, opnum, d, out) {
            return result;
        }
    }
    match opnum {
        // The saved and current filehandles in two exports (or one in the
        // pseudo-root): two file systems.
        op::RENAME | op::LINK if c.crosses_exports() => Err(Status::XDev),
        op::WRITE | op::CREATE | op::REMOVE | op::RENAME | op::LINK | op::SETATTR
            if c.srv.export().read_only() =>
        {
            Err(Status::RoFs)
        }
        op::PUTFH => filehandle::putfh(c, d),
        op::PUTROOTFH | op::PUTPUBFH => filehandle::putrootfh(c),
        op::GETFH => filehandle::getfh(c, out),
        op::SAVEFH => filehandle::savefh(c),
        op::RESTOREFH => filehandle::restorefh(c),
        op::LOOKUP => filehandle::lookup(c, d),
        op::LOOKUPP => filehandle::lookupp(c),
        op::GETATTR => attributes::getattr(c, d, out),
        op::ACCESS => attributes::access(c, d, out),
        op::VERIFY => attributes::verify(c, d, false),
        op::NVERIFY => attributes::verify(c, d, true),
        op::READDIR => directory::readdir(c, d, out),
        op::READLINK => directory::readlink(c, out),
        op::SECINFO => directory::secinfo(c, d, out),
        op::SETCLIENTID => client::setclientid(c, d, out),
        op::SETCLIENTID_CONFIRM => client::setclientid_confirm(c, d),
        op::RENEW => client::renew(c, d),
        op::OPEN => open::open(c, d, out),
        op::OPEN_CONFIRM => open::open_confirm(c, d, out),
        op::OPEN_DOWNGRADE => open::open_downgrade(c, d, out),
        op::CLOSE => open::close(c, d, out),
        op::READ => read::read(c, d, out),
        op::WRITE => write::write(c, d, out),
        op::COMMIT => write::commit(c, d, out),
        op::CREATE => namespace::create(c, d, out),
        op::REMOVE => namespace::remove(c, d, out),
        op::RENAME => namespace::rename(c, d, out),
        op::LINK => namespace::link(c, d),
        op::SETATTR => attributes::setattr(c, d, out),
        // No delegations are granted, so there is nothing to return.
        op::DELEGRETURN => Err(Status::BadStateId),
        op::LOCK => lock::lock(c, d, out),
        op::LOCKT => lock::lockt(c, d, out),
        op::LOCKU => lock::locku(c, d, out),
        op::RELEASE_LOCKOWNER => lock::release_lockowner(c, d),
        // No delegations: nothing to purge; no named attributes.
        op::DELEGPURGE | op::OPENATTR => Err(Status::NotSupp),
        _ => Err(Status::OpIllegal),
    }
}

/// Runs a seqid-sequenced operation of `owner`: a retransmission (the
/// owner's last seqid again) gets the recorded reply; otherwise the op runs
/// and its reply is recorded for the next retransmission.
pub(crate) fn sequenced(
    c: &mut Compound<'_>,
    out: &mut ReplyBody,
    owner: Option<OwnerKey>,
    seqid: u32,
    request: u64,
    f: impl FnOnce(&mut Compound<'_>, &mut ReplyBody) -> OpResult,
) -> OpResult {
    if let Some(k) = &owner {
        let replayed = c.srv.state.lock().replay(k, seqid, Some(request));
        if let Some(replayed) = replayed {
            let (status, body) = replayed?;
            // The first reply waited for what the operation changed to be
            // durable; so does this one (a retransmission can come before).
            // Operations run in place changed nothing in the catalog.
            if !c.ctx.in_place {
                c.reply_after(c.srv.catalog().sync_point(), None);
            }
            out.enc().buf.extend_from_slice(&body);
            return if status == Status::Ok {
                Ok(())
            } else {
                Err(status)
            };
        }
    }
    let mark = out.len();
    let result = f(c, out);
    if let Some(k) = owner {
        let status = result.err().unwrap_or(Status::Ok);
        if let Some(body) = out.bytes_since(mark) {
            c.srv
                .state
                .lock()
                .remember(&k, seqid, request, status, body);
        }
    }
    result
}

/// What a seqid-bearing request is, to tell a retransmission from another
/// request reusing its seqid: a hash of the operation, the current file and
/// the argument bytes (`args`: the undecoded rest when the operation began;
/// `d`: the decoder after its arguments).
pub(crate) fn request_print(opnum: u32, fileid: u64, args: &[u8], d: &Decoder<'_>) -> u64 {
    let used = args.len().saturating_sub(d.remaining());
    let mut bytes = Vec::with_capacity(12 + used);
    bytes.extend_from_slice(&opnum.to_be_bytes());
    bytes.extend_from_slice(&fileid.to_be_bytes());
    bytes.extend_from_slice(&args[..used]);
    crate::catalog::fnv1a(&bytes)
}

/// Checks a name component (RFC 7530 §12.7): the name as UTF-8, or the
/// NFS error that refuses it.
pub(crate) fn component<'a>(d: &mut Decoder<'a>) -> OpResult<&'a str> {
    let raw = d.opaque(super::consts::NFS4_OPAQUE_LIMIT)?;
    if raw.is_empty() {
        return Err(Status::Inval);
    }
    if raw.len() > MAX_NAME {
        return Err(Status::NameTooLong);
    }
    let name = std::str::from_utf8(raw).map_err(|_| Status::Inval)?;
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Status::BadName);
    }
    Ok(name)
}
