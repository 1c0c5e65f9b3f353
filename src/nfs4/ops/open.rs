//! OPEN, OPEN_CONFIRM, OPEN_DOWNGRADE and CLOSE.

use std::time::Instant;

use super::component;
use crate::catalog::NodeKind;
use crate::nfs4::attrs::Bitmap;
use crate::nfs4::compound::Compound;
use crate::nfs4::consts::{
    OpResult, Status, CLAIM_NULL, CLAIM_PREVIOUS, NFS4_OPAQUE_LIMIT, OPEN4_CREATE,
    OPEN4_RESULT_CONFIRM, OPEN4_RESULT_LOCKTYPE_POSIX, OPEN4_SHARE_ACCESS_WRITE,
    OPEN_DELEGATE_NONE,
};
use crate::nfs4::server::catalog_status;
use crate::nfs4::state::StateId;
use crate::rpc::ReplyBody;
use crate::xdr::{Decoder, Encoder};

const UNCHECKED4: u32 = 0;
const GUARDED4: u32 = 1;
const EXCLUSIVE4: u32 = 2;
const CLAIM_DELEGATE_CUR: u32 = 2;
const CLAIM_DELEGATE_PREV: u32 = 3;

pub(crate) fn stateid(d: &mut Decoder<'_>) -> OpResult<StateId> {
    Ok(StateId {
        seqid: d.u32()?,
        other: d.array()?,
    })
}

pub(crate) fn put_stateid(e: &mut Encoder, s: &StateId) {
    e.u32(s.seqid);
    e.fixed(&s.other);
}

enum Claim<'a> {
    Null(&'a str),
    Previous,
    Delegated,
}

pub(crate) fn open(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let seqid = d.u32()?;
    let access = d.u32()?;
    let deny = d.u32()?;
    let clientid = d.u64()?;
    let owner = d.opaque(NFS4_OPAQUE_LIMIT)?;
    let create = d.u32()? == OPEN4_CREATE;
    if create {
        match d.u32()? {
            UNCHECKED4 | GUARDED4 => {
                Bitmap::decode(d)?;
                d.opaque(usize::MAX)?;
            }
            EXCLUSIVE4 => {
                d.fixed(8)?;
            }
            _ => return Err(Status::Inval),
        }
    }
    // A bad name is an argument error, found before the seqid is used.
    let claim = match d.u32()? {
        CLAIM_NULL => Claim::Null(component(d)?),
        CLAIM_PREVIOUS => {
            d.u32()?;
            Claim::Previous
        }
        CLAIM_DELEGATE_CUR => {
            stateid(d)?;
            component(d)?;
            Claim::Delegated
        }
        CLAIM_DELEGATE_PREV => {
            component(d)?;
            Claim::Delegated
        }
        _ => return Err(Status::Inval),
    };
    let dir = c.current()?;
    let now = Instant::now();
    let confirm_needed = c.srv.state.lock().begin_open(clientid, owner, seqid, now)?;
    let result = open_checked(c, &dir, claim, create, access, deny, clientid, owner);
    let (file, stateid) = match result {
        Ok(v) => v,
        Err(e) => {
            c.srv.state.lock().forget_idle_owner(clientid, owner);
            return Err(e);
        }
    };
    let change = dir.change();
    let e = out.enc();
    put_stateid(e, &stateid);
    e.bool(true); // change_info4.atomic
    e.u64(change);
    e.u64(change);
    let mut rflags = OPEN4_RESULT_LOCKTYPE_POSIX;
    if confirm_needed {
        rflags |= OPEN4_RESULT_CONFIRM;
    }
    e.u32(rflags);
    e.u32(0); // attrset: nothing set
    e.u32(OPEN_DELEGATE_NONE);
    c.current = Some(file);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn open_checked(
    c: &mut Compound<'_>,
    dir: &std::sync::Arc<crate::catalog::Node>,
    claim: Claim<'_>,
    create: bool,
    access: u32,
    deny: u32,
    clientid: u64,
    owner: &[u8],
) -> OpResult<(std::sync::Arc<crate::catalog::Node>, StateId)> {
    let name = match claim {
        Claim::Null(name) => name,
        // No grace period is offered yet, so there is nothing to reclaim.
        Claim::Previous => return Err(Status::NoGrace),
        // No delegations are ever granted.
        Claim::Delegated => return Err(Status::ReclaimBad),
    };
    if dir.kind != NodeKind::Folder {
        return Err(Status::NotDir);
    }
    // The write path is not served yet: creating or writing is refused.
    if create || access & OPEN4_SHARE_ACCESS_WRITE != 0 {
        return Err(Status::RoFs);
    }
    let file = c
        .srv
        .catalog()
        .lookup(&dir.id, name)
        .map_err(|e| catalog_status(&e))?
        .ok_or(Status::NoEnt)?;
    if file.kind == NodeKind::Folder {
        return Err(Status::IsDir);
    }
    let stateid = c
        .srv
        .state
        .lock()
        .open(clientid, owner, file.fileid, access, deny)?;
    Ok((file, stateid))
}

pub(crate) fn open_confirm(
    c: &mut Compound<'_>,
    d: &mut Decoder<'_>,
    out: &mut ReplyBody,
) -> OpResult {
    let sid = stateid(d)?;
    let seqid = d.u32()?;
    c.current()?;
    let next = c.srv.state.lock().open_confirm(&sid, seqid)?;
    put_stateid(out.enc(), &next);
    Ok(())
}

pub(crate) fn open_downgrade(
    c: &mut Compound<'_>,
    d: &mut Decoder<'_>,
    out: &mut ReplyBody,
) -> OpResult {
    let sid = stateid(d)?;
    let seqid = d.u32()?;
    let access = d.u32()?;
    let deny = d.u32()?;
    c.current()?;
    let next = c
        .srv
        .state
        .lock()
        .open_downgrade(&sid, seqid, access, deny)?;
    put_stateid(out.enc(), &next);
    Ok(())
}

pub(crate) fn close(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let seqid = d.u32()?;
    let sid = stateid(d)?;
    c.current()?;
    let next = c.srv.state.lock().close(&sid, seqid)?;
    put_stateid(out.enc(), &next);
    Ok(())
}
