//! GETATTR, ACCESS, VERIFY and NVERIFY.

use std::sync::Arc;

use super::write::io_status;
use crate::catalog::{now_ns, Node, NodeKind};
use crate::nfs4::attrs::{self, decode_settable, Bitmap, SetAttrs, TimeSet};
use crate::nfs4::compound::Compound;
use crate::nfs4::consts::{
    OpResult, Status, ACCESS4_DELETE, ACCESS4_EXECUTE, ACCESS4_EXTEND, ACCESS4_LOOKUP,
    ACCESS4_MODIFY, ACCESS4_READ, OPEN4_SHARE_ACCESS_WRITE,
};
use crate::nfs4::permission;
use crate::nfs4::state::StateId;
use crate::rpc::ReplyBody;
use crate::xdr::Decoder;

pub(crate) fn getattr(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let requested = Bitmap::decode(d)?;
    let node = c.current()?;
    attrs::encode_fattr(c.srv, &node, c.viewer(), &requested, out.enc())
}

/// Grants by the caller's rights (see [`permission::rights`]: by default
/// the owner's mode bits, every caller being the owner).
pub(crate) fn access(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let requested = d.u32()?;
    let node = c.current()?;
    let is_dir = node.kind == NodeKind::Folder;
    // Only the rights meaningful for the object's type are reported
    // (RFC 7530 §16.1): LOOKUP and DELETE (of an entry) for folders,
    // EXECUTE for files. The Mac asks DELETE of the file it deletes and
    // takes a right the server does not report as granted (kext
    // nfs4_access_rpc), where a DELETE reported and refused was EACCES.
    let all = if is_dir {
        ACCESS4_READ | ACCESS4_LOOKUP | ACCESS4_MODIFY | ACCESS4_EXTEND | ACCESS4_DELETE
    } else {
        ACCESS4_READ | ACCESS4_MODIFY | ACCESS4_EXTEND | ACCESS4_EXECUTE
    };
    let rights = permission::rights(c.srv, &node, &c.ctx.credentials);
    let mut granted = 0;
    if rights & permission::READ != 0 {
        granted |= ACCESS4_READ;
    }
    if rights & permission::WRITE != 0 {
        granted |= ACCESS4_MODIFY | ACCESS4_EXTEND;
        if is_dir {
            granted |= ACCESS4_DELETE;
        }
    }
    if rights & permission::EXECUTE != 0 {
        granted |= if is_dir {
            ACCESS4_LOOKUP
        } else {
            ACCESS4_EXECUTE
        };
    }
    let supported = requested & all;
    out.enc().u32(supported);
    out.enc().u32(supported & granted);
    Ok(())
}

pub(crate) fn verify(c: &mut Compound<'_>, d: &mut Decoder<'_>, negate: bool) -> OpResult {
    let node = c.current()?;
    let same = attrs::matches(c.srv, &node, c.viewer(), d)?;
    match (same, negate) {
        (true, false) | (false, true) => Ok(()),
        (false, false) => Err(Status::NotSame),
        (true, true) => Err(Status::Same),
    }
}

/// SETATTR: size (truncate/extend), mode, owner, times. Answered once the
/// change is committed to the catalog (`Compound::reply_after`).
pub(crate) fn setattr(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let sid = super::open::stateid(d)?;
    let attrs = decode_settable(d)?;
    let node = c.current()?;
    apply(c, &node, &attrs, &sid)?;
    attrs.bitmap.encode(out.enc());
    Ok(())
}

/// Applies `attrs` to `node` (shared by SETATTR and OPEN's createattrs).
pub(crate) fn apply(
    c: &Compound<'_>,
    node: &Arc<Node>,
    attrs: &SetAttrs,
    sid: &StateId,
) -> OpResult {
    if attrs.bitmap == Default::default() {
        return Ok(());
    }
    let changes = |want: &Option<String>, have: String| want.as_ref().is_some_and(|w| *w != have);
    {
        // Only root changes owners; setting what is already shown (the
        // Mac's copies set owner and group to the caller's own) is no change.
        let m = node.meta();
        let viewer = c.viewer();
        if (changes(&attrs.owner, attrs::owner_of(c.srv, &m, viewer))
            || changes(&attrs.owner_group, attrs::group_of(c.srv, &m, viewer)))
            && permission::effective_uid(c.srv, &c.ctx.credentials) != 0
        {
            return Err(Status::Perm);
        }
    }
    // Where the export checks by mode: mode, flags, creation time and
    // times given by value are the owner's to set (POSIX chmod, chflags,
    // utimes); "now" also whoever may write (touch).
    let cred = &c.ctx.credentials;
    let given_time = |t: &Option<TimeSet>| matches!(t, Some(TimeSet::Client(_)));
    if attrs.mode.is_some()
        || attrs.hidden.is_some()
        || attrs.created.is_some()
        || given_time(&attrs.atime)
        || given_time(&attrs.mtime)
    {
        permission::require_owner(c.srv, node, cred)?;
    } else if attrs.atime.is_some() || attrs.mtime.is_some() {
        permission::require_owner(c.srv, node, cred)
            .or_else(|_| permission::require(c.srv, node, cred, permission::WRITE))?;
    }
    if let Some(size) = attrs.size {
        super::regular_file(node)?;
        if size > i64::MAX as u64 {
            return Err(Status::FBig);
        }
        c.srv.state.lock().check_io(
            sid,
            c.srv.state_key(node),
            OPEN4_SHARE_ACCESS_WRITE,
            c.ctx.peer,
            std::time::Instant::now(),
        )?;
        if sid.is_special() {
            permission::require(c.srv, node, cred, permission::WRITE)?;
        }
        let path = node.meta().content.clone().ok_or(Status::Io)?;
        let files = c.srv.files();
        let file = files
            .get_writable(node.fileid, &path)
            .map_err(|e| io_status(&e))?;
        files.set_len(&file, size).map_err(|e| {
            tracing::error!(node = %node.id, size, error = %e, "SETATTR size failed");
            io_status(&e)
        })?;
    }
    let now = now_ns();
    let pending = c.srv.catalog().set_attrs(node, |m| {
        if let Some(size) = attrs.size {
            m.size = size;
            m.modified_ns = now;
        }
        if let Some(mode) = attrs.mode {
            m.mode = Some(mode);
        }
        if let Some(o) = &attrs.owner {
            m.owner = Some(o.clone());
        }
        if let Some(g) = &attrs.owner_group {
            m.owner_group = Some(g.clone());
        }
        match attrs.atime {
            Some(TimeSet::Server) => m.accessed_ns = now,
            Some(TimeSet::Client(t)) => m.accessed_ns = t,
            None => {}
        }
        if let Some(t) = attrs.created {
            m.created_ns = Some(t);
        }
        if let Some(h) = attrs.hidden {
            m.hidden = h;
        }
        match attrs.mtime {
            Some(TimeSet::Server) => m.modified_ns = now,
            Some(TimeSet::Client(t)) => m.modified_ns = t,
            None => {}
        }
    });
    c.reply_after(pending, None);
    Ok(())
}
