//! LOCK, LOCKT, LOCKU and RELEASE_LOCKOWNER: byte-range locks, with the
//! rules in `nfs4::state`. A denied lock answers NFS4ERR_DENIED with the
//! conflicting range; blocking requests (READW/WRITEW) are retried by the
//! client.

use std::time::Instant;

use super::open::{put_stateid, stateid};
use super::{request_print, sequenced};
use crate::nfs4::compound::Compound;
use crate::nfs4::consts::{op, OpResult, Status, NFS4_OPAQUE_LIMIT};
use crate::nfs4::state::{Denied, LockError, Locker};
use crate::rpc::ReplyBody;
use crate::xdr::{Decoder, Encoder};

fn put_denied(e: &mut Encoder, d: &Denied) {
    e.u64(d.offset);
    e.u64(d.length);
    e.u32(d.locktype);
    e.u64(d.clientid);
    e.opaque(&d.owner);
}

fn lock_result(r: Result<crate::nfs4::state::StateId, LockError>, out: &mut ReplyBody) -> OpResult {
    match r {
        Ok(s) => {
            put_stateid(out.enc(), &s);
            Ok(())
        }
        Err(LockError::Denied(d)) => {
            put_denied(out.enc(), &d);
            Err(Status::Denied)
        }
        Err(LockError::Status(s)) => Err(s),
    }
}

fn current_file(c: &Compound<'_>) -> OpResult<u64> {
    let node = c.current()?;
    super::regular_file(&node)?;
    Ok(c.srv.state_key(&node))
}

pub(crate) fn lock(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let args = d.rest();
    let locktype = d.u32()?;
    let reclaim = d.bool()?;
    let offset = d.u64()?;
    let length = d.u64()?;
    let locker = if d.bool()? {
        let open_seqid = d.u32()?;
        let open_stateid = stateid(d)?;
        let lock_seqid = d.u32()?;
        let clientid = d.u64()?;
        let owner = d.opaque(NFS4_OPAQUE_LIMIT)?;
        Locker::New {
            open_seqid,
            open_stateid,
            lock_seqid,
            clientid,
            owner,
        }
    } else {
        Locker::Existing {
            lock_stateid: stateid(d)?,
            lock_seqid: d.u32()?,
        }
    };
    let fileid = current_file(c)?;
    let request = request_print(op::LOCK, fileid, args, d);
    let (key, seqid) = {
        let st = c.srv.state.lock();
        match &locker {
            Locker::New {
                open_stateid,
                open_seqid,
                ..
            } => (st.owner_of(open_stateid), *open_seqid),
            Locker::Existing {
                lock_stateid,
                lock_seqid,
            } => (st.owner_of(lock_stateid), *lock_seqid),
        }
    };
    sequenced(c, out, key, seqid, request, |c, out| {
        let r = c.srv.state.lock().lock(
            locktype,
            reclaim,
            offset,
            length,
            &locker,
            fileid,
            Instant::now(),
        );
        lock_result(r, out)
    })
}

pub(crate) fn lockt(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let locktype = d.u32()?;
    let offset = d.u64()?;
    let length = d.u64()?;
    let clientid = d.u64()?;
    let owner = d.opaque(NFS4_OPAQUE_LIMIT)?;
    let fileid = current_file(c)?;
    let r = c.srv.state.lock().lock_test(
        locktype,
        offset,
        length,
        clientid,
        owner,
        fileid,
        Instant::now(),
    );
    match r {
        Ok(()) => Ok(()),
        Err(LockError::Denied(d)) => {
            put_denied(out.enc(), &d);
            Err(Status::Denied)
        }
        Err(LockError::Status(s)) => Err(s),
    }
}

pub(crate) fn locku(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let args = d.rest();
    let _locktype = d.u32()?;
    let seqid = d.u32()?;
    let sid = stateid(d)?;
    let offset = d.u64()?;
    let length = d.u64()?;
    let fileid = current_file(c)?;
    let request = request_print(op::LOCKU, fileid, args, d);
    let key = c.srv.state.lock().owner_of(&sid);
    sequenced(c, out, key, seqid, request, |c, out| {
        let next = c
            .srv
            .state
            .lock()
            .unlock(seqid, &sid, offset, length, Instant::now())?;
        put_stateid(out.enc(), &next);
        Ok(())
    })
}

pub(crate) fn release_lockowner(c: &mut Compound<'_>, d: &mut Decoder<'_>) -> OpResult {
    let clientid = d.u64()?;
    let owner = d.opaque(NFS4_OPAQUE_LIMIT)?;
    c.srv
        .state
        .lock()
        .release_lock_owner(clientid, owner, Instant::now())
}
