//! PUTFH, PUTROOTFH/PUTPUBFH, GETFH, SAVEFH, RESTOREFH, LOOKUP, LOOKUPP.

use super::component;
use crate::catalog::NodeKind;
use crate::nfs4::compound::Compound;
use crate::nfs4::consts::{OpResult, Status, NFS4_FHSIZE};
use crate::nfs4::permission;
use crate::nfs4::server::catalog_status;
use crate::rpc::ReplyBody;
use crate::xdr::Decoder;

pub(crate) fn putfh(c: &mut Compound<'_>, d: &mut Decoder<'_>) -> OpResult {
    let handle = d.opaque(NFS4_FHSIZE).map_err(|_| Status::BadHandle)?;
    let node = c.srv.node_of_handle(handle).inspect_err(|e| {
        tracing::debug!(handle = ?String::from_utf8_lossy(handle), status = ?e, "PUTFH refused");
    })?;
    c.current = Some(node);
    Ok(())
}

/// The export has one root, which is also the public filehandle.
pub(crate) fn putrootfh(c: &mut Compound<'_>) -> OpResult {
    c.current = Some(c.srv.catalog().root());
    Ok(())
}

pub(crate) fn getfh(c: &mut Compound<'_>, out: &mut ReplyBody) -> OpResult {
    let node = c.current()?;
    let handle = c.srv.handle_of(&node)?;
    out.enc().opaque(&handle);
    Ok(())
}

pub(crate) fn savefh(c: &mut Compound<'_>) -> OpResult {
    c.saved = Some(c.current()?);
    Ok(())
}

pub(crate) fn restorefh(c: &mut Compound<'_>) -> OpResult {
    c.current = Some(c.saved.clone().ok_or(Status::RestoreFh)?);
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
        return Err(Status::NoEnt);
    }
    let parent = c
        .srv
        .catalog()
        .parent_of(&node)
        .map_err(|e| catalog_status(&e))?;
    c.current = Some(parent);
    Ok(())
}
