//! Who may do what to a node: the caller's uid and groups against the
//! node's owner, group and mode bits, where the export asks for it
//! (`export.permissions = "mode"`, for a server several users share).
//!
//! By default (`"owner"`) the export serves one editor's own machine and
//! every caller is the owner of every node, as a Mac's own disk treats its
//! user: nothing is refused here, and ACCESS reports the owner's bits.

use super::Export;
use crate::catalog::{Node, NodeKind};
use crate::rpc::Credentials;

/// Why the caller may not: POSIX EACCES (NFS4ERR_ACCESS, NFS3ERR_ACCES) or
/// EPERM (…_PERM: only the owner may).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Access,
    Perm,
}

/// Read (files: contents; folders: list names).
pub const READ: u32 = 4;
/// Write (files: contents; folders: add, remove and rename entries).
pub const WRITE: u32 = 2;
/// Execute (files); search, i.e. look names up (folders).
pub const EXECUTE: u32 = 1;

/// The uid that acts after the export's squash ("root": uid 0 acts as
/// nobody; "all": everyone does).
pub fn effective_uid(export: &Export, cred: &Credentials) -> u32 {
    let uid = cred.uid();
    match export.config().export.squash.as_str() {
        "all" => NOBODY,
        "root" if uid == 0 => NOBODY,
        _ => uid,
    }
}

const NOBODY: u32 = 65534;

/// The owner and group a node created by `cred` records: the creator's,
/// where the export checks by mode (so the creator may use what it made);
/// none (the export's default) otherwise.
pub fn creator(export: &Export, cred: &Credentials) -> (Option<String>, Option<String>) {
    if !by_mode(export) {
        return (None, None);
    }
    let gid = match export.config().export.squash.as_str() {
        "all" => NOBODY,
        "root" if cred.uid() == 0 => NOBODY,
        _ => cred.gid(),
    };
    (
        Some(effective_uid(export, cred).to_string()),
        Some(gid.to_string()),
    )
}

/// Whether permissions are checked by mode bits on this export.
pub fn by_mode(export: &Export) -> bool {
    export.config().export.permissions == "mode"
}

/// The rights (`READ | WRITE | EXECUTE`) `cred` has on `node`: the owner's
/// bits, the group's or the others', as POSIX picks them; uid 0 has read
/// and write on everything and execute where anyone has it (folders:
/// always). Where the export does not check by mode, the owner's bits.
/// Nobody writes to a read-only export.
pub fn rights(export: &Export, node: &Node, cred: &Credentials) -> u32 {
    let rights = rights_by_mode(export, node, cred);
    if export.read_only() {
        // ACCESS then reports no MODIFY, EXTEND or DELETE: the Finder
        // shows the volume read-only instead of failing each copy.
        rights & !WRITE
    } else {
        rights
    }
}

fn rights_by_mode(export: &Export, node: &Node, cred: &Credentials) -> u32 {
    let meta = node.meta();
    let mode = export.mode_of(node, &meta);
    if !by_mode(export) {
        return (mode >> 6) & 7;
    }
    let uid = effective_uid(export, cred);
    if uid == 0 {
        let any_x = mode & 0o111 != 0 || node.kind == NodeKind::Folder;
        return READ | WRITE | if any_x { EXECUTE } else { 0 };
    }
    // Unowned nodes show the caller as owner where the export says
    // "caller": then the caller is their owner here too.
    if export.owner_uid(&meta, cred.uid()) == Some(uid) {
        return (mode >> 6) & 7;
    }
    let group = export.group_gid(&meta, cred.gid());
    let in_group = group.is_some_and(|g| match cred {
        Credentials::Sys(s) => s.gid == g || s.gids.contains(&g),
        Credentials::None => false,
    });
    if in_group {
        (mode >> 3) & 7
    } else {
        mode & 7
    }
}

/// NFS4ERR_ACCESS unless `cred` has all of `want` on `node` (always
/// granted where the export does not check by mode).
pub fn require(export: &Export, node: &Node, cred: &Credentials, want: u32) -> Result<(), Denied> {
    if !by_mode(export) || rights(export, node, cred) & want == want {
        Ok(())
    } else {
        Err(Denied::Access)
    }
}

/// NFS4ERR_PERM unless `cred` owns `node` or is root: what changing a
/// node's mode or setting its times to a given value asks (POSIX chmod,
/// utimes). Granted where the export does not check by mode.
pub fn require_owner(export: &Export, node: &Node, cred: &Credentials) -> Result<(), Denied> {
    if !by_mode(export) {
        return Ok(());
    }
    let uid = effective_uid(export, cred);
    if uid == 0 || export.owner_uid(&node.meta(), cred.uid()) == Some(uid) {
        Ok(())
    } else {
        Err(Denied::Perm)
    }
}
