//! OPEN, OPEN_CONFIRM, OPEN_DOWNGRADE and CLOSE.

use std::sync::Arc;
use std::time::Instant;

use super::attributes::apply;
use super::namespace::put_cinfo;
use super::write::io_status;
use super::{component, request_print, sequenced};
use crate::catalog::{CatalogError, DirChange, NewNode, Node, NodeKind};
use crate::nfs4::attrs::{decode_settable, Bitmap, SetAttrs};
use crate::nfs4::compound::Compound;
use crate::nfs4::consts::{
    attr, op, OpResult, Status, CLAIM_NULL, CLAIM_PREVIOUS, NFS4_OPAQUE_LIMIT, OPEN4_CREATE,
    OPEN4_RESULT_CONFIRM, OPEN4_RESULT_LOCKTYPE_POSIX, OPEN4_SHARE_ACCESS_READ,
    OPEN4_SHARE_ACCESS_WRITE, OPEN_DELEGATE_NONE,
};
use crate::nfs4::permission;
use crate::nfs4::state::{Begin, OwnerKey, StateId};
use crate::nfs4::view::catalog_status;
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

/// openflag4 with its createhow4.
enum How {
    NoCreate,
    Unchecked(SetAttrs),
    Guarded(SetAttrs),
    Exclusive([u8; 8]),
}

pub(crate) fn open(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let args = d.rest();
    let seqid = d.u32()?;
    let access = d.u32()?;
    let deny = d.u32()?;
    let clientid = d.u64()?;
    let owner = d.opaque(NFS4_OPAQUE_LIMIT)?;
    let how = if d.u32()? == OPEN4_CREATE {
        match d.u32()? {
            UNCHECKED4 => How::Unchecked(decode_settable(d)?),
            GUARDED4 => How::Guarded(decode_settable(d)?),
            EXCLUSIVE4 => How::Exclusive(d.array()?),
            _ => return Err(Status::Inval),
        }
    } else {
        How::NoCreate
    };
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
    let cur = c.current()?;
    let key = OwnerKey::open(clientid, owner);
    let request = request_print(op::OPEN, cur.fileid, args, d);
    sequenced(c, out, Some(key), seqid, request, |c, out| {
        let now = Instant::now();
        let confirm_needed = match c.srv.state.lock().begin_open(clientid, owner, seqid, now)? {
            Begin::Proceed { confirm_needed } => confirm_needed,
            Begin::Replay(status, body) => {
                out.enc().buf.extend_from_slice(&body);
                return if status == Status::Ok {
                    Ok(())
                } else {
                    Err(status)
                };
            }
        };
        let reclaiming = matches!(claim, Claim::Previous);
        let result = open_checked(c, &cur, claim, &how, access, deny, clientid, owner, now);
        let (file, stateid, cinfo, attrset) = match result {
            Ok(v) => v,
            Err(e) => {
                c.srv.state.lock().forget_idle_owner(clientid, owner);
                return Err(e);
            }
        };
        c.srv.state.lock().spoke_for(c.ctx.peer, clientid);
        let e = out.enc();
        put_stateid(e, &stateid);
        put_cinfo(e, cinfo);
        let mut rflags = OPEN4_RESULT_LOCKTYPE_POSIX;
        if reclaiming {
            c.srv.state.lock().confirm_open_owner(clientid, owner);
        } else if confirm_needed {
            rflags |= OPEN4_RESULT_CONFIRM;
        }
        e.u32(rflags);
        attrset.encode(e);
        e.u32(OPEN_DELEGATE_NONE);
        c.current = Some(file);
        Ok(())
    })
}

type Opened = (Arc<Node>, StateId, DirChange, Bitmap);

#[allow(clippy::too_many_arguments)]
fn open_checked(
    c: &mut Compound<'_>,
    dir: &Arc<Node>,
    claim: Claim<'_>,
    how: &How,
    access: u32,
    deny: u32,
    clientid: u64,
    owner: &[u8],
    now: Instant,
) -> OpResult<Opened> {
    let writes = access & OPEN4_SHARE_ACCESS_WRITE != 0 || !matches!(how, How::NoCreate);
    if writes && c.srv.export().read_only() {
        return Err(Status::RoFs);
    }
    let name = match claim {
        Claim::Null(name) => name,
        // Reclaim after a restart: the current filehandle is the file.
        Claim::Previous => return reclaim(c, dir, access, deny, clientid, owner, now),
        // No delegations are ever granted.
        Claim::Delegated => return Err(Status::ReclaimBad),
    };
    // During the grace period only reclaims may create state.
    if c.srv.state.lock().in_grace(now) {
        return Err(Status::Grace);
    }
    if dir.kind != NodeKind::Folder {
        return Err(Status::NotDir);
    }
    let cred = &c.ctx.credentials;
    permission::require(c.srv, dir, cred, permission::EXECUTE)?;
    let existing = c
        .srv
        .catalog()
        .lookup(&dir.id, name)
        .map_err(|e| catalog_status(&e))?;
    let unchanged = DirChange {
        before: dir.change(),
        after: dir.change(),
    };
    let mut attrset = Bitmap::default();
    let mut truncate = None;
    let mut created = false;
    let (file, cinfo) = match (existing, how) {
        (Some(f), How::NoCreate) => (f, unchanged),
        (None, How::NoCreate) => return Err(Status::NoEnt),
        (Some(_), How::Guarded(_)) => return Err(Status::Exist),
        (Some(f), How::Exclusive(v)) => {
            // A retransmitted exclusive create finds its own verifier.
            if f.meta().create_verifier != Some(*v) {
                return Err(Status::Exist);
            }
            created = true;
            (f, unchanged)
        }
        (Some(f), How::Unchecked(attrs)) => {
            // An existing file keeps its attributes: only a size of zero
            // (O_TRUNC) is applied (RFC 7530 §16.16.5).
            if attrs.size == Some(0) {
                truncate = Some(0);
                attrset.set(attr::SIZE);
            }
            (f, unchanged)
        }
        (None, how) => {
            let (mode, verifier, size) = match how {
                How::Unchecked(a) | How::Guarded(a) => (a.mode, None, a.size),
                How::Exclusive(v) => (None, Some(*v), None),
                How::NoCreate => unreachable!("handled above"),
            };
            if mode.is_some() {
                attrset.set(attr::MODE);
            }
            if let Some(s) = size.filter(|s| *s > 0) {
                truncate = Some(s);
                attrset.set(attr::SIZE);
            }
            permission::require(c.srv, dir, cred, permission::WRITE | permission::EXECUTE)?;
            created = true;
            create_file(c, dir, name, mode, verifier)?
        }
    };
    super::openable(&file)?;
    if !created {
        // The creator may use what it just made whatever its mode.
        let mut want = 0;
        if access & OPEN4_SHARE_ACCESS_READ != 0 {
            want |= permission::READ;
        }
        if access & OPEN4_SHARE_ACCESS_WRITE != 0 || truncate.is_some() {
            want |= permission::WRITE;
        }
        permission::require(c.srv, &file, cred, want)?;
    }
    let stateid =
        c.srv
            .state
            .lock()
            .open(clientid, owner, c.srv.state_key(&file), access, deny, now)?;
    if let Some(size) = truncate {
        let attrs = SetAttrs {
            size: Some(size),
            bitmap: Bitmap::of(&[attr::SIZE]),
            ..SetAttrs::default()
        };
        // The server applies the createattrs itself: an open for reading
        // that creates a file with a size is not refused OPENMODE. Through
        // the open where it may write (its own deny does not stand in the
        // way), else as I/O without an open (other opens' denials do).
        let by = if access & OPEN4_SHARE_ACCESS_WRITE != 0 {
            stateid
        } else {
            StateId::ANONYMOUS
        };
        if let Err(e) = apply(c, &file, &attrs, &by) {
            // The open is undone; the open-owner's seqid stays consumed.
            let _ = c.srv.state.lock().close_unchecked(&stateid);
            return Err(e);
        }
    }
    Ok((file, stateid, cinfo, attrset))
}

/// OPEN with CLAIM_PREVIOUS: a client of the previous server instance
/// re-establishes an open it held, during the grace period.
fn reclaim(
    c: &mut Compound<'_>,
    file: &Arc<Node>,
    access: u32,
    deny: u32,
    clientid: u64,
    owner: &[u8],
    now: Instant,
) -> OpResult<Opened> {
    super::openable(file)?;
    let mut st = c.srv.state.lock();
    st.check_reclaim(clientid, now)?;
    let stateid = st.open(clientid, owner, c.srv.state_key(file), access, deny, now)?;
    let change = file.change();
    Ok((
        file.clone(),
        stateid,
        DirChange {
            before: change,
            after: change,
        },
        Bitmap::default(),
    ))
}

/// Creates a file's content under the storage folder, then its catalog
/// node; answers once the node is committed.
fn create_file(
    c: &Compound<'_>,
    dir: &Arc<Node>,
    name: &str,
    mode: Option<u32>,
    verifier: Option<[u8; 8]>,
) -> OpResult<(Arc<Node>, DirChange)> {
    let catalog = c.srv.catalog();
    let id = catalog.allocate_id();
    let path = c.srv.content_path_for(&id);
    c.srv.files().create_content(&path).map_err(|e| {
        tracing::error!(path = %path.display(), error = %e, "cannot create content file");
        io_status(&e)
    })?;
    let (owner, owner_group) = permission::creator(c.srv, &c.ctx.credentials);
    let new = NewNode {
        id,
        kind: NodeKind::File,
        name: name.to_string(),
        content: Some(path.clone()),
        mode,
        special: None,
        owner,
        owner_group,
        create_verifier: verifier,
    };
    match catalog.create(&dir.id, new) {
        Ok((node, cinfo, pending)) => {
            c.reply_after(pending, None);
            Ok((node, cinfo))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            match e {
                // Another client created it meanwhile.
                CatalogError::Exists { .. } => Err(Status::Exist),
                e => Err(catalog_status(&e)),
            }
        }
    }
}

pub(crate) fn open_confirm(
    c: &mut Compound<'_>,
    d: &mut Decoder<'_>,
    out: &mut ReplyBody,
) -> OpResult {
    let args = d.rest();
    let sid = stateid(d)?;
    let seqid = d.u32()?;
    let fileid = c.current()?.fileid;
    let request = request_print(op::OPEN_CONFIRM, fileid, args, d);
    let key = c.srv.state.lock().owner_of(&sid);
    sequenced(c, out, key, seqid, request, |c, out| {
        let next = c.srv.state.lock().open_confirm(&sid, seqid)?;
        put_stateid(out.enc(), &next);
        Ok(())
    })
}

pub(crate) fn open_downgrade(
    c: &mut Compound<'_>,
    d: &mut Decoder<'_>,
    out: &mut ReplyBody,
) -> OpResult {
    let args = d.rest();
    let sid = stateid(d)?;
    let seqid = d.u32()?;
    let access = d.u32()?;
    let deny = d.u32()?;
    let fileid = c.current()?.fileid;
    let request = request_print(op::OPEN_DOWNGRADE, fileid, args, d);
    let key = c.srv.state.lock().owner_of(&sid);
    sequenced(c, out, key, seqid, request, |c, out| {
        let next = c
            .srv
            .state
            .lock()
            .open_downgrade(&sid, seqid, access, deny)?;
        put_stateid(out.enc(), &next);
        Ok(())
    })
}

pub(crate) fn close(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let args = d.rest();
    let seqid = d.u32()?;
    let sid = stateid(d)?;
    let fileid = c.current()?.fileid;
    let request = request_print(op::CLOSE, fileid, args, d);
    let (key, file) = {
        let st = c.srv.state.lock();
        (st.owner_of(&sid), st.file_of(&sid))
    };
    // Removing the content file is I/O: not on a network thread.
    if file.is_some_and(|f| c.srv.content_goes_with_last_close(f))
        && crate::catalog::memory_only::refused()
    {
        return Err(Status::Delay);
    }
    sequenced(c, out, key, seqid, request, |c, out| {
        let (next, fileid) = {
            let mut st = c.srv.state.lock();
            let fileid = st.file_of(&sid);
            (st.close(&sid, seqid)?, fileid)
        };
        if let Some(fileid) = fileid {
            c.srv.closed(fileid);
        }
        put_stateid(out.enc(), &next);
        Ok(())
    })
}
