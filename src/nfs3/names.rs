//! LOOKUP, READLINK, CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR, RENAME
//! and LINK. Each namespace change is answered once the catalog batch
//! holding it has committed (group commit), as in NFSv4.

use std::sync::Arc;

use super::args::{
    CreateArgs, CreateHow, DirOpArgs, FhArgs, LinkArgs, MkdirArgs, MknodArgs, RenameArgs, Sattr3,
    SymlinkArgs, NF3BLK, NF3CHR, NF3FIFO, NF3SOCK,
};
use super::info::apply;
use super::reply::{Answer, LinkAnswer, RenameAnswer, Wcc, WccAnswer};
use super::{catalog_status, io_status, Call, Nfs3Result, Nfs3Status};
use crate::catalog::{CatalogError, NewNode, Node, NodeKind, Special, MAX_NAME};
use crate::export::permission::{self, EXECUTE, WRITE};

/// A name to create or remove: UTF-8, not empty, no `/` or NUL, not `.`
/// or `..`, at most MAX_NAME bytes.
fn new_name(raw: &[u8]) -> Nfs3Result<&str> {
    if raw.is_empty() {
        return Err(Nfs3Status::Inval);
    }
    if raw.len() > MAX_NAME {
        return Err(Nfs3Status::NameTooLong);
    }
    let name = std::str::from_utf8(raw).map_err(|_| Nfs3Status::Inval)?;
    if name == "." || name == ".." {
        return Err(Nfs3Status::Exist);
    }
    if name.contains('/') || name.contains('\0') {
        return Err(Nfs3Status::Inval);
    }
    Ok(name)
}

/// A folder the caller may change: NOTDIR for anything but a folder,
/// ACCES unless it is writable and searchable by the caller.
fn writable_folder(call: &Call<'_>, dir: &Node) -> Nfs3Result<()> {
    if dir.kind != NodeKind::Folder {
        return Err(Nfs3Status::NotDir);
    }
    call.require(dir, WRITE | EXECUTE)
}

/// LOOKUP, with `.` and `..` (NFSv3 clients look up the parent by name).
pub fn lookup(call: &Call<'_>, a: &DirOpArgs<'_>) -> Answer<Arc<Node>> {
    let dir = match call.node(a.dir) {
        Ok(d) => d,
        Err(s) => return Answer::failed(s, None),
    };
    let result = (|| {
        if dir.kind != NodeKind::Folder {
            return Err(Nfs3Status::NotDir);
        }
        call.require(&dir, EXECUTE)?;
        if a.name.len() > MAX_NAME {
            return Err(Nfs3Status::NameTooLong);
        }
        let name = std::str::from_utf8(a.name).map_err(|_| Nfs3Status::NoEnt)?;
        let catalog = call.export.catalog();
        match name {
            "" => Err(Nfs3Status::NoEnt),
            "." => Ok(dir.clone()),
            ".." => catalog.parent_of(&dir).map_err(|e| catalog_status(&e)),
            _ => catalog
                .lookup(&dir.id, name)
                .map_err(|e| catalog_status(&e))?
                .ok_or(Nfs3Status::NoEnt),
        }
    })();
    Answer {
        result,
        attrs: Some(dir),
    }
}

pub fn readlink(call: &Call<'_>, a: &FhArgs<'_>) -> Answer<Vec<u8>> {
    call.answer(a.fh, |n| match n.kind {
        NodeKind::Symlink => Ok(n
            .meta()
            .special
            .as_ref()
            .map(|s| s.target.clone())
            .unwrap_or_default()),
        _ => Err(Nfs3Status::Inval),
    })
}

/// Runs a namespace change in the folder `dir_fh` names, with its
/// wcc_data.
fn in_folder<T>(
    call: &Call<'_>,
    dir_fh: &[u8],
    f: impl FnOnce(&Arc<Node>) -> Nfs3Result<T>,
) -> WccAnswer<T> {
    call.with_wcc(dir_fh, |dir| {
        writable_folder(call, dir)?;
        f(dir)
    })
}

/// Creates `new` in `dir`; the reply waits for its commit.
fn make(call: &Call<'_>, dir: &Node, new: NewNode) -> Nfs3Result<Arc<Node>> {
    let (node, _, pending) = call
        .export
        .catalog()
        .create(&dir.id, new)
        .map_err(|e| catalog_status(&e))?;
    call.reply_after(pending, None);
    Ok(node)
}

/// A new node of `kind` named `name`, the creator's where the export
/// checks permissions by mode.
fn new_node(call: &Call<'_>, kind: NodeKind, name: &str, mode: Option<u32>) -> NewNode {
    let (owner, owner_group) = permission::creator(call.export, call.cred);
    let catalog = call.export.catalog();
    NewNode {
        id: if kind.is_special() {
            catalog.allocate_special_id()
        } else {
            catalog.allocate_id()
        },
        kind,
        name: name.to_string(),
        content: None,
        mode: mode.map(|m| m & 0o7777),
        special: None,
        owner,
        owner_group,
        create_verifier: None,
    }
}

/// The attributes of a create other than the mode (given at creation).
fn after_create(call: &Call<'_>, node: &Arc<Node>, attrs: &Sattr3) -> Nfs3Result<()> {
    let rest = Sattr3 {
        mode: None,
        ..attrs.clone()
    };
    apply(call, node, &rest)
}

pub fn create(call: &Call<'_>, a: &CreateArgs<'_>) -> WccAnswer<Arc<Node>> {
    in_folder(call, a.at.dir, |dir| {
        let name = new_name(a.at.name)?;
        let catalog = call.export.catalog();
        let existing = catalog
            .lookup(&dir.id, name)
            .map_err(|e| catalog_status(&e))?;
        match (&a.how, existing) {
            (CreateHow::Guarded(_), Some(_)) => Err(Nfs3Status::Exist),
            (CreateHow::Exclusive(v), Some(f)) => {
                // A retransmitted exclusive create finds its own verifier.
                if f.meta().create_verifier == Some(*v) {
                    Ok(f)
                } else {
                    Err(Nfs3Status::Exist)
                }
            }
            (CreateHow::Unchecked(attrs), Some(f)) => {
                if f.kind != NodeKind::File {
                    return Err(Nfs3Status::Exist);
                }
                // An existing file keeps its attributes but for a size of
                // zero (O_TRUNC), as NFSv4's UNCHECKED4.
                if attrs.size == Some(0) {
                    call.require(&f, WRITE)?;
                    let trunc = Sattr3 {
                        size: Some(0),
                        ..Sattr3::default()
                    };
                    apply(call, &f, &trunc)?;
                }
                Ok(f)
            }
            (how, None) => {
                let (attrs, verifier) = match how {
                    CreateHow::Unchecked(s) | CreateHow::Guarded(s) => (s.clone(), None),
                    CreateHow::Exclusive(v) => (Sattr3::default(), Some(*v)),
                };
                let mut new = new_node(call, NodeKind::File, name, attrs.mode);
                let path = call.export.content_path_for(&new.id);
                call.export.files().create_content(&path).map_err(|e| {
                    tracing::error!(path = %path.display(), error = %e, "cannot create content file");
                    io_status(&e)
                })?;
                new.content = Some(path.clone());
                new.create_verifier = verifier;
                let node = make(call, dir, new).inspect_err(|_| {
                    let _ = std::fs::remove_file(&path);
                })?;
                after_create(call, &node, &attrs)?;
                Ok(node)
            }
        }
    })
}

pub fn mkdir(call: &Call<'_>, a: &MkdirArgs<'_>) -> WccAnswer<Arc<Node>> {
    in_folder(call, a.at.dir, |dir| {
        let name = new_name(a.at.name)?;
        let node = make(
            call,
            dir,
            new_node(call, NodeKind::Folder, name, a.attrs.mode),
        )?;
        after_create(call, &node, &a.attrs)?;
        Ok(node)
    })
}

pub fn symlink(call: &Call<'_>, a: &SymlinkArgs<'_>) -> WccAnswer<Arc<Node>> {
    in_folder(call, a.at.dir, |dir| {
        let name = new_name(a.at.name)?;
        if a.target.is_empty() {
            return Err(Nfs3Status::Inval);
        }
        let mut new = new_node(call, NodeKind::Symlink, name, a.attrs.mode);
        new.special = Some(Special {
            target: a.target.to_vec(),
            rdev: (0, 0),
        });
        let node = make(call, dir, new)?;
        after_create(call, &node, &a.attrs)?;
        Ok(node)
    })
}

pub fn mknod(call: &Call<'_>, a: &MknodArgs<'_>) -> WccAnswer<Arc<Node>> {
    in_folder(call, a.at.dir, |dir| {
        let name = new_name(a.at.name)?;
        let kind = match a.ftype {
            NF3BLK => NodeKind::BlockDevice,
            NF3CHR => NodeKind::CharDevice,
            NF3SOCK => NodeKind::Socket,
            NF3FIFO => NodeKind::Fifo,
            _ => return Err(Nfs3Status::BadType),
        };
        let mut new = new_node(call, kind, name, a.attrs.mode);
        new.special = Some(Special {
            target: Vec::new(),
            rdev: a.rdev,
        });
        let node = make(call, dir, new)?;
        after_create(call, &node, &a.attrs)?;
        Ok(node)
    })
}

/// REMOVE (`folder_wanted` false) and RMDIR (true).
pub fn remove(call: &Call<'_>, a: &DirOpArgs<'_>, folder_wanted: bool) -> WccAnswer<()> {
    in_folder(call, a.dir, |dir| {
        let name = std::str::from_utf8(a.name).map_err(|_| Nfs3Status::NoEnt)?;
        match name {
            "" => return Err(Nfs3Status::NoEnt),
            "." => return Err(Nfs3Status::Inval),
            ".." => return Err(Nfs3Status::Exist),
            _ => {}
        }
        let catalog = call.export.catalog();
        let target = catalog
            .lookup(&dir.id, name)
            .map_err(|e| catalog_status(&e))?
            .ok_or(Nfs3Status::NoEnt)?;
        match (target.kind == NodeKind::Folder, folder_wanted) {
            (true, false) => return Err(Nfs3Status::IsDir),
            (false, true) => return Err(Nfs3Status::NotDir),
            _ => {}
        }
        let (node, _, pending) = catalog.remove(&dir.id, name).map_err(|e| match e {
            CatalogError::NotFound(_) => Nfs3Status::NoEnt,
            e => catalog_status(&e),
        })?;
        call.reply_after(pending, call.export.discard_content_later(node));
        Ok(())
    })
}

pub fn rename(call: &Call<'_>, a: &RenameArgs<'_>) -> RenameAnswer {
    let from = call.node(a.from.dir);
    let to = call.node_here(a.to.dir);
    let wcc = |n: &Nfs3Result<Arc<Node>>| n.as_ref().map(Wcc::before).unwrap_or_default();
    let (from_wcc, to_wcc) = (wcc(&from), wcc(&to));
    let result = (|| {
        let (from, to) = (from?, to?);
        for d in [&from, &to] {
            writable_folder(call, d)?;
        }
        let old = std::str::from_utf8(a.from.name).map_err(|_| Nfs3Status::NoEnt)?;
        if old.is_empty() || old == "." || old == ".." {
            return Err(Nfs3Status::Inval);
        }
        let new = new_name(a.to.name).map_err(|s| match s {
            Nfs3Status::Exist => Nfs3Status::Inval,
            s => s,
        })?;
        let (renamed, pending) = call
            .export
            .catalog()
            .rename(&from.id, old, &to.id, new)
            .map_err(|e| match e {
                CatalogError::NotFound(_) => Nfs3Status::NoEnt,
                e => catalog_status(&e),
            })?;
        let discard = renamed
            .replaced
            .and_then(|r| call.export.discard_content_later(r));
        call.reply_after(pending, discard);
        Ok(())
    })();
    RenameAnswer {
        result,
        from: from_wcc,
        to: to_wcc,
    }
}

/// A node has one place in the catalog: no hard links (README). MLINK
/// (PATHCONF's linkmax is 1) reaches macOS as EMLINK; NOTSUPP would reach
/// it as EIO (kext/nfs_subs.c: nfs_maperr).
pub fn link(call: &Call<'_>, a: &LinkArgs<'_>) -> LinkAnswer {
    let file = call.node(a.file).ok();
    let dir = call
        .node(a.link.dir)
        .map(|d| Wcc::before(&d))
        .unwrap_or_default();
    LinkAnswer {
        result: Err(if file.is_some() {
            Nfs3Status::MLink
        } else {
            Nfs3Status::Stale
        }),
        file,
        dir,
    }
}
