//! CREATE (folders, symlinks, FIFOs, sockets, devices), REMOVE, RENAME
//! and LINK. Each change is applied in
//! memory and answered only once the catalog batch holding it has
//! committed (group commit), so a reply never promises what a crash undoes.

use std::sync::Arc;

use super::component;
use crate::catalog::{CatalogError, DirChange, NewNode, Node, NodeKind, Special};
use crate::nfs4::attrs::{decode_settable, Bitmap};
use crate::nfs4::compound::Compound;
use crate::nfs4::consts::{
    attr, OpResult, Status, MAX_LINK_TARGET, NF4BLK, NF4CHR, NF4DIR, NF4FIFO, NF4LNK, NF4SOCK,
};
use crate::nfs4::permission::{self, EXECUTE, WRITE};
use crate::nfs4::view::catalog_status;
use crate::rpc::ReplyBody;
use crate::xdr::{Decoder, Encoder};

pub(crate) fn put_cinfo(e: &mut Encoder, c: DirChange) {
    // Changes are serialised under the catalog's namespace lock, so
    // before/after are atomic.
    e.bool(true);
    e.u64(c.before);
    e.u64(c.after);
}

/// The current filehandle as a folder.
pub(crate) fn current_dir(c: &Compound<'_>) -> OpResult<Arc<Node>> {
    let dir = c.current()?;
    if dir.kind != NodeKind::Folder {
        return Err(Status::NotDir);
    }
    Ok(dir)
}

/// CREATE: folders, and the server's own special nodes — symlinks,
/// FIFOs, sockets, block and character devices — kept in
/// `markbase_nfs_specials`, never in the app's `file_nodes`. Regular files
/// are made by OPEN (BADTYPE here, RFC 7530 §16.4.4).
pub(crate) fn create(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let objtype = d.u32()?;
    let (kind, special) = match objtype {
        NF4LNK => {
            let target = d.opaque(MAX_LINK_TARGET)?.to_vec();
            (
                Some(NodeKind::Symlink),
                Some(Special {
                    target,
                    rdev: (0, 0),
                }),
            )
        }
        NF4BLK | NF4CHR => {
            let rdev = (d.u32()?, d.u32()?);
            let kind = if objtype == NF4BLK {
                NodeKind::BlockDevice
            } else {
                NodeKind::CharDevice
            };
            (
                Some(kind),
                Some(Special {
                    target: Vec::new(),
                    rdev,
                }),
            )
        }
        NF4SOCK => (Some(NodeKind::Socket), Some(Special::default())),
        NF4FIFO => (Some(NodeKind::Fifo), Some(Special::default())),
        NF4DIR => (Some(NodeKind::Folder), None),
        _ => (None, None),
    };
    let name = component(d)?;
    let attrs = decode_settable(d)?;
    let dir = current_dir(c)?;
    let kind = kind.ok_or(Status::BadType)?;
    if kind == NodeKind::Symlink && special.as_ref().is_some_and(|s| s.target.is_empty()) {
        // An empty target names nothing (RFC 7530 §16.4.4).
        return Err(Status::Inval);
    }
    permission::require(c.srv, &dir, &c.ctx.credentials, WRITE | EXECUTE)?;
    let (owner, owner_group) = permission::creator(c.srv, &c.ctx.credentials);
    let catalog = c.srv.catalog();
    let new = NewNode {
        id: if kind == NodeKind::Folder {
            catalog.allocate_id()
        } else {
            catalog.allocate_special_id()
        },
        kind,
        name: name.to_string(),
        content: None,
        mode: attrs.mode,
        special,
        owner,
        owner_group,
        create_verifier: None,
    };
    let (node, cinfo, pending) = catalog
        .create(&dir.id, new)
        .map_err(|e| catalog_status(&e))?;
    c.reply_after(pending, None);
    let e = out.enc();
    put_cinfo(e, cinfo);
    let mut set = Bitmap::default();
    if attrs.mode.is_some() {
        set.set(attr::MODE);
    }
    set.encode(e);
    c.current = Some(node);
    Ok(())
}

pub(crate) fn remove(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let name = component(d)?;
    let dir = current_dir(c)?;
    permission::require(c.srv, &dir, &c.ctx.credentials, WRITE | EXECUTE)?;
    let (node, cinfo, pending) = c.srv.catalog().remove(&dir.id, name).map_err(|e| match e {
        CatalogError::NotFound(_) => Status::NoEnt,
        e => catalog_status(&e),
    })?;
    c.reply_after(pending, c.srv.discard_content_later(node));
    put_cinfo(out.enc(), cinfo);
    Ok(())
}

pub(crate) fn rename(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let old = component(d)?;
    let new = component(d)?;
    let target_dir = current_dir(c)?;
    let source_dir = c.saved_node()?;
    if source_dir.kind != NodeKind::Folder {
        return Err(Status::NotDir);
    }
    for dir in [&source_dir, &target_dir] {
        permission::require(c.srv, dir, &c.ctx.credentials, WRITE | EXECUTE)?;
    }
    let (renamed, pending) = c
        .srv
        .catalog()
        .rename(&source_dir.id, old, &target_dir.id, new)
        .map_err(|e| match e {
            CatalogError::NotFound(_) => Status::NoEnt,
            e => catalog_status(&e),
        })?;
    let discard = renamed
        .replaced
        .and_then(|r| c.srv.discard_content_later(r));
    c.reply_after(pending, discard);
    let e = out.enc();
    put_cinfo(e, renamed.source);
    put_cinfo(e, renamed.target);
    Ok(())
}

/// A node has one parent in the catalog: hard links cannot be expressed
/// (link_support is false and numlinks is always 1 for files).
pub(crate) fn link(c: &mut Compound<'_>, d: &mut Decoder<'_>) -> OpResult {
    component(d)?;
    current_dir(c)?;
    c.saved_node()?;
    // One name per node (maxlink 1): "too many links" reaches macOS as
    // EMLINK, where NOTSUPP would reach it as EIO (kext/nfs_subs.c:
    // nfs_maperr) and Linux as EOPNOTSUPP.
    Err(Status::MLink)
}
