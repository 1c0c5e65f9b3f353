//! PUTFH, PUTROOTFH/PUTPUBFH, GETFH, SAVEFH, RESTOREFH, LOOKUP, LOOKUPP.

use super::component;
use crate::catalog::NodeKind;
use crate::export::handle;
use crate::nfs4::compound::{Compound, Saved};
use crate::nfs4::consts::{OpResult, Status, NFS4_FHSIZE};
use crate::nfs4::permission;
use crate::nfs4::view::{catalog_status, handle_status};
use crate::rpc::ReplyBody;
use crate::xdr::Decoder;

/// The handle names its export (or the pseudo-root): the COMPOUND moves
/// into that export, if it serves the caller.
pub(crate) fn putfh(c: &mut Compound<'_>, d: &mut Decoder<'_>) -> OpResult {
    let handle = d.opaque(NFS4_FHSIZE).map_err(|_| Status::BadHandle)?;
    let prog = c.prog;
    let view = match handle::owner_of(handle).map_err(handle_status)? {
        handle::Owner::PseudoRoot if prog.pseudo_root().is_some() => {
            c.enter_pseudo_root();
            return Ok(());
        }
        handle::Owner::PseudoRoot => return Err(Status::Stale),
        handle::Owner::Export(id) => prog.view_with_id(id).ok_or(Status::Stale)?,
    };
    if prog.pseudo_root().is_some() {
        // Several exports: the COMPOUND's first check was that one of
        // them serves the caller; this one must.
        view.export()
            .admit(c.ctx.peer)
            .map_err(|_| Status::Access)?;
    }
    let node = view.node_of_handle(handle).inspect_err(|e| {
        tracing::debug!(handle = ?String::from_utf8_lossy(handle), status = ?e, "PUTFH refused");
    })?;
    c.enter(view, node);
    Ok(())
}

/// The root: the export's (also the public filehandle), or the
/// pseudo-root where there are several exports.
pub(crate) fn putrootfh(c: &mut Compound<'_>) -> OpResult {
    if c.prog.pseudo_root().is_some() {
        c.enter_pseudo_root();
        return Ok(());
    }
    let only = c.prog.primary();
    c.enter(only, only.catalog().root());
    Ok(())
}

pub(crate) fn getfh(c: &mut Compound<'_>, out: &mut ReplyBody) -> OpResult {
    let node = c.current()?;
    let handle = c.srv.handle_of(&node)?;
    out.enc().opaque(&handle);
    Ok(())
}

pub(crate) fn savefh(c: &mut Compound<'_>) -> OpResult {
    c.saved = if c.at_pseudo_root {
        Saved::PseudoRoot
    } else {
        Saved::Node(c.srv, c.current()?)
    };
    Ok(())
}

pub(crate) fn restorefh(c: &mut Compound<'_>) -> OpResult {
    match c.saved.clone() {
        Saved::None => return Err(Status::RestoreFh),
        Saved::PseudoRoot => c.enter_pseudo_root(),
        Saved::Node(view, node) => c.enter(view, node),
    }
    Ok(())
}

pub(crate) fn lookup(c: &mut Compound<'_>, d: &mut Decoder<'_>) -> OpResult {
    let dir = c.current()?;
    let name = component(d)?;
    match dir.kind {
        NodeKind::Folder => {}
        NodeKind::Symlink => return Err(Status::Symlink),
        _ => return Err(Status::NotDir),
    }
    permission::require(c.srv, &dir, &c.ctx.credentials, permission::EXECUTE)?;
    let found = c
        .srv
        .catalog()
        .lookup(&dir.id, name)
        .map_err(|e| catalog_status(&e))?;
    c.current = Some(found.ok_or(Status::NoEnt)?);
    Ok(())
}

pub(crate) fn lookupp(c: &mut Compound<'_>) -> OpResult {
    let node = c.current()?;
    if node.kind != NodeKind::Folder {
        return Err(Status::NotDir);
    }
    if node.id.is_root() {
        // An export's root: its parent is the pseudo-root, if any.
        if c.prog.pseudo_root().is_none() {
            return Err(Status::NoEnt);
        }
        c.enter_pseudo_root();
        return Ok(());
    }
    let parent = c
        .srv
        .catalog()
        .parent_of(&node)
        .map_err(|e| catalog_status(&e))?;
    c.current = Some(parent);
    Ok(())
}
