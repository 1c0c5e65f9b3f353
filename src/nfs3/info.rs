//! GETATTR, SETATTR, ACCESS, FSSTAT, FSINFO and PATHCONF.

use std::sync::Arc;

use super::args::{AccessArgs, FhArgs, SetTime, SetattrArgs};
use super::reply::{ctime_of, Answer, FsInfo, WccAnswer};
use super::{io_status, Call, Nfs3Result, Nfs3Status};
use crate::catalog::{now_ns, Node, NodeKind};
use crate::export::permission::{self, EXECUTE, READ, WRITE};
use crate::storage::VolumeStats;

/// ACCESS3 bits.
const ACCESS3_READ: u32 = 0x01;
const ACCESS3_LOOKUP: u32 = 0x02;
const ACCESS3_MODIFY: u32 = 0x04;
const ACCESS3_EXTEND: u32 = 0x08;
const ACCESS3_DELETE: u32 = 0x10;
const ACCESS3_EXECUTE: u32 = 0x20;

pub fn getattr(call: &Call<'_>, a: &FhArgs<'_>) -> Nfs3Result<Arc<Node>> {
    call.node(a.fh)
}

/// The rights meaningful for the object's type that the caller has:
/// LOOKUP and DELETE for folders, EXECUTE for files (as in NFSv4: the Mac
/// asks DELETE of a file it deletes and takes what is not reported).
pub fn access(call: &Call<'_>, a: &AccessArgs<'_>) -> Answer<u32> {
    call.answer(a.fh, |node| {
        let is_dir = node.kind == NodeKind::Folder;
        let rights = permission::rights(call.export, node, call.cred);
        let mut granted = 0;
        if rights & READ != 0 {
            granted |= ACCESS3_READ;
        }
        if rights & WRITE != 0 {
            granted |= ACCESS3_MODIFY | ACCESS3_EXTEND;
            if is_dir {
                granted |= ACCESS3_DELETE;
            }
        }
        if rights & EXECUTE != 0 {
            granted |= if is_dir {
                ACCESS3_LOOKUP
            } else {
                ACCESS3_EXECUTE
            };
        }
        Ok(a.access & granted)
    })
}

/// SETATTR: size, mode, owner, group, times; with a guard, only where the
/// object's ctime is the one given (else NOT_SYNC).
pub fn setattr(call: &Call<'_>, a: &SetattrArgs<'_>) -> WccAnswer<()> {
    call.with_wcc(a.fh, |node| {
        if let Some(guard) = a.guard {
            // The guard is the ctime the client saw, before this call.
            if guard != ctime_of(node.change()) {
                return Err(Nfs3Status::NotSync);
            }
        }
        apply(call, node, &a.attrs)
    })
}

/// Applies a sattr3 (SETATTR, and the attributes of a create).
pub fn apply(call: &Call<'_>, node: &Arc<Node>, s: &super::args::Sattr3) -> Nfs3Result<()> {
    if s.is_empty() {
        return Ok(());
    }
    let export = call.export;
    {
        // Only root changes owners; setting what is already shown is no
        // change (the Mac's copies set owner and group to the caller's).
        let m = node.meta();
        let changes_owner = s
            .uid
            .is_some_and(|u| export.owner_uid(&m, call.cred.uid()) != Some(u));
        let changes_group = s
            .gid
            .is_some_and(|g| export.group_gid(&m, call.cred.gid()) != Some(g));
        if (changes_owner || changes_group) && permission::effective_uid(export, call.cred) != 0 {
            return Err(Nfs3Status::Perm);
        }
    }
    let given_time = |t: &Option<SetTime>| matches!(t, Some(SetTime::ClientTime(_)));
    if s.mode.is_some() || given_time(&s.atime) || given_time(&s.mtime) {
        call.require_owner(node)?;
    } else if s.atime.is_some() || s.mtime.is_some() {
        call.require_owner(node)
            .or_else(|_| call.require(node, WRITE))?;
    }
    if let Some(size) = s.size {
        match node.kind {
            NodeKind::File => {}
            NodeKind::Folder => return Err(Nfs3Status::IsDir),
            _ => return Err(Nfs3Status::Inval),
        }
        if size > i64::MAX as u64 {
            return Err(Nfs3Status::FBig);
        }
        call.require(node, WRITE)?;
        let path = node.meta().content.clone().ok_or(Nfs3Status::Io)?;
        let files = export.files();
        let file = files
            .get_writable(node.fileid, &path)
            .map_err(|e| io_status(&e))?;
        files.set_len(&file, size).map_err(|e| {
            tracing::error!(node = %node.id, size, error = %e, "NFSv3 SETATTR size failed");
            io_status(&e)
        })?;
    }
    let now = now_ns();
    let time_of = |t: SetTime| match t {
        SetTime::ServerTime => now,
        SetTime::ClientTime(t) => t.to_ns(),
    };
    let pending = export.catalog().set_attrs(node, |m| {
        if let Some(size) = s.size {
            m.size = size;
            m.modified_ns = now;
        }
        if let Some(mode) = s.mode {
            m.mode = Some(mode & 0o7777);
        }
        if let Some(u) = s.uid {
            m.owner = Some(u.to_string());
        }
        if let Some(g) = s.gid {
            m.owner_group = Some(g.to_string());
        }
        if let Some(t) = s.atime {
            m.accessed_ns = time_of(t);
        }
        if let Some(t) = s.mtime {
            m.modified_ns = time_of(t);
        }
    });
    call.reply_after(pending, None);
    Ok(())
}

pub fn fsstat(call: &Call<'_>, a: &FhArgs<'_>) -> Answer<VolumeStats> {
    call.answer(a.fh, |_| Ok(call.export.volume_stats()))
}

pub fn fsinfo(call: &Call<'_>, a: &FhArgs<'_>) -> Answer<FsInfo> {
    let nfs = &call.export.config().nfs;
    call.answer(a.fh, |_| {
        Ok(FsInfo {
            rtmax: nfs.max_read,
            wtmax: nfs.max_write,
            dtpref: 64 * 1024,
        })
    })
}

pub fn pathconf(call: &Call<'_>, a: &FhArgs<'_>) -> Answer<()> {
    call.answer(a.fh, |_| Ok(()))
}
