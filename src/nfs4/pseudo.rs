//! The NFSv4 pseudo-root (RFC 7530 §7.3): a read-only folder whose entries
//! are the exports, shown when the server has several (or one not at `/`).
//! It owns the pseudo-root's attributes and every operation whose current
//! filehandle is the pseudo-root; LOOKUP of an entry moves the COMPOUND
//! into that export.
//!
//! What the Mac needs of it (Apple's kext, `nfs_vfsops.c` `nfs4_mount`):
//! a mount of `server:/warren` sends PUTROOTFH, LOOKUP "warren", GETFH,
//! GETATTR, one COMPOUND per component, then SECINFO of the last one; a
//! mount of `server:/` takes the handle from the FILEHANDLE attribute. An
//! fsid that differs from the parent's marks a mount point the client
//! crosses by itself (mirror mounts), and the kext takes an object's
//! mounted_on_fileid as its file id.

use std::time::{SystemTime, UNIX_EPOCH};

use super::attrs::{self, Bitmap, Viewer};
use super::compound::Compound;
use super::consts::{
    attr, op, OpResult, Status, ACCESS4_DELETE, ACCESS4_EXTEND, ACCESS4_LOOKUP, ACCESS4_MODIFY,
    ACCESS4_READ, NF4DIR,
};
use super::ops::component;
use super::ops::directory::{put_flavors, put_listing, READDIR_FIXED};
use super::view::ExportView;
use crate::catalog::fnv1a;
use crate::export::handle;
use crate::rpc::ReplyBody;
use crate::xdr::{Decoder, Encoder};

/// The pseudo-root's own file id (its file system has only it and the
/// export entries, whose ids are their roots', see
/// `export::root_fileid`).
const ROOT_FILEID: u64 = 1;
/// The pseudo-root's fsid: apart from every export's `(export_id, 0)`.
const FSID: (u64, u64) = (0, 1);

pub(crate) struct PseudoRoot {
    /// Export names (their path without the `/`), in the tuning file's
    /// order; an entry's index is its view's.
    names: Vec<String>,
    /// Moves with the list of exports (RFC 7530 §5.8.1.4), which is fixed
    /// for a run.
    change: u64,
    created_ns: i64,
}

impl PseudoRoot {
    pub(crate) fn new(views: &[std::sync::Arc<ExportView>]) -> PseudoRoot {
        let names: Vec<String> = views
            .iter()
            .map(|v| v.export().path().trim_start_matches('/').to_string())
            .collect();
        let created_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        PseudoRoot {
            change: fnv1a(names.join("/").as_bytes()),
            names,
            created_ns,
        }
    }

    /// The entries `c`'s caller may see: (index, name).
    fn visible<'a>(&'a self, c: &'a Compound<'_>) -> impl Iterator<Item = (usize, &'a str)> + 'a {
        self.names.iter().enumerate().filter_map(move |(i, name)| {
            let view = c.prog.view(i)?;
            view.export()
                .serves(c.ctx.peer)
                .then_some((i, name.as_str()))
        })
    }

    /// The index of the export named `name`.
    fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The values of `attrs` (all supported) for the pseudo-root.
    fn encode_values(&self, c: &Compound<'_>, attrs: &Bitmap, e: &mut Encoder) -> OpResult {
        let cfg = c.prog.config();
        let viewer = Viewer::of(&c.ctx.credentials);
        let entries = self.visible(c).count() as u32;
        for a in attrs.iter() {
            if attrs::encode_fixed(a, cfg, e) {
                continue;
            }
            match a {
                attr::TYPE => e.u32(NF4DIR),
                attr::CHANGE => e.u64(self.change),
                attr::SIZE => e.u64(4096),
                attr::HIDDEN | attr::CASE_INSENSITIVE => e.bool(false),
                attr::FSID => {
                    e.u64(FSID.0);
                    e.u64(FSID.1);
                }
                attr::RDATTR_ERROR => e.u32(0),
                attr::FILEHANDLE => e.opaque(&handle::pseudo_root()),
                attr::FILEID | attr::MOUNTED_ON_FILEID => e.u64(ROOT_FILEID),
                attr::MODE => e.u32(0o555),
                attr::NUMLINKS => e.u32(2 + entries),
                // The caller's own, as an export's nodes are by default.
                attr::OWNER => e.string(&viewer.uid.to_string()),
                attr::OWNER_GROUP => e.string(&viewer.gid.to_string()),
                attr::RAWDEV => {
                    e.u32(0);
                    e.u32(0);
                }
                attr::FILES_AVAIL
                | attr::FILES_FREE
                | attr::FILES_TOTAL
                | attr::SPACE_AVAIL
                | attr::SPACE_FREE
                | attr::SPACE_TOTAL
                | attr::SPACE_USED => e.u64(0),
                attr::TIME_ACCESS | attr::TIME_CREATE | attr::TIME_METADATA | attr::TIME_MODIFY => {
                    attrs::time(e, self.created_ns)
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Runs `opnum` when the current filehandle is the pseudo-root; None for
/// operations that do not use the current filehandle (they run as usual).
pub(crate) fn dispatch(
    c: &mut Compound<'_>,
    opnum: u32,
    d: &mut Decoder<'_>,
    out: &mut ReplyBody,
) -> Option<OpResult> {
    let root = c.prog.pseudo_root()?;
    Some(match opnum {
        op::GETFH => {
            out.enc().opaque(&handle::pseudo_root());
            Ok(())
        }
        op::GETATTR => (|| {
            let requested = Bitmap::decode(d)?;
            attrs::encode_fattr_with(&requested, out.enc(), |returned, e| {
                root.encode_values(c, returned, e)
            })
        })(),
        op::VERIFY | op::NVERIFY => attrs::matches_with(d, |bitmap, e| {
            root.encode_values(c, bitmap, e)
        })
        .and_then(|same| match (same, opnum == op::NVERIFY) {
            (true, false) | (false, true) => Ok(()),
            (false, false) => Err(Status::NotSame),
            (true, true) => Err(Status::Same),
        }),
        op::ACCESS => d.u32().map_err(Status::from).map(|requested| {
            let supported = requested
                & (ACCESS4_READ
                    | ACCESS4_LOOKUP
                    | ACCESS4_MODIFY
                    | ACCESS4_EXTEND
                    | ACCESS4_DELETE);
            out.enc().u32(supported);
            out.enc().u32(supported & (ACCESS4_READ | ACCESS4_LOOKUP));
        }),
        op::LOOKUP => lookup(c, root, d),
        // The pseudo-root is the top: it has no parent.
        op::LOOKUPP => Err(Status::NoEnt),
        op::READDIR => readdir(c, root, d, out),
        op::SECINFO => secinfo(c, root, d, out),
        op::READLINK => Err(Status::Inval),
        // Nothing in the pseudo-root can be made, removed, renamed or
        // changed; an export is changed inside it.
        op::OPEN | op::CREATE | op::REMOVE | op::RENAME | op::LINK | op::SETATTR => {
            Err(Status::RoFs)
        }
        op::READ
        | op::WRITE
        | op::COMMIT
        | op::LOCK
        | op::LOCKT
        | op::LOCKU
        | op::OPEN_CONFIRM
        | op::OPEN_DOWNGRADE
        | op::CLOSE => Err(Status::IsDir),
        op::OPENATTR => Err(Status::NotSupp),
        _ => return None,
    })
}

/// LOOKUP of an export's name: its root becomes the current filehandle.
/// A machine the export does not serve is refused (ACCESS, logged once a
/// minute) rather than told the export is not there.
fn lookup(c: &mut Compound<'_>, root: &PseudoRoot, d: &mut Decoder<'_>) -> OpResult {
    let name = component(d)?;
    let index = root.index_of(name).ok_or(Status::NoEnt)?;
    let prog = c.prog;
    let view = prog.view(index).ok_or(Status::NoEnt)?;
    view.export()
        .admit(c.ctx.peer)
        .map_err(|_| Status::Access)?;
    c.enter(view, view.catalog().root());
    Ok(())
}

/// The exports the caller may mount, each with its root's attributes.
fn readdir(
    c: &mut Compound<'_>,
    root: &PseudoRoot,
    d: &mut Decoder<'_>,
    out: &mut ReplyBody,
) -> OpResult {
    let cookie = d.u64()?;
    let _cookieverf = d.fixed(8)?;
    let _dircount = d.u32()?;
    let maxcount = d.u32()? as usize;
    let requested = Bitmap::decode(d)?;
    if cookie == 1 || cookie == 2 {
        return Err(Status::BadCookie);
    }
    if maxcount < READDIR_FIXED {
        return Err(Status::TooSmall);
    }
    let viewer = c.viewer();
    // Cookie 3 + index: stable while the list of exports is.
    let first = cookie.saturating_sub(2) as usize;
    let prog = c.prog;
    let entries: Vec<(usize, &str)> = root.visible(c).filter(|(i, _)| *i >= first).collect();
    put_listing(out, maxcount, entries, |(index, name), e| {
        let Some(view) = prog.view(index) else {
            return Ok(false);
        };
        e.bool(true);
        e.u64(3 + index as u64);
        e.string(name);
        attrs::encode_fattr(view, &view.catalog().root(), viewer, &requested, e)?;
        Ok(true)
    })
}

/// AUTH_SYS and AUTH_NONE for an export the caller may see (the Mac's
/// mount fails on any error here); the current filehandle is consumed.
fn secinfo(
    c: &mut Compound<'_>,
    root: &PseudoRoot,
    d: &mut Decoder<'_>,
    out: &mut ReplyBody,
) -> OpResult {
    let name = component(d)?;
    let index = root.index_of(name).ok_or(Status::NoEnt)?;
    if !root.visible(c).any(|(i, _)| i == index) {
        return Err(Status::NoEnt);
    }
    c.current = None;
    c.at_pseudo_root = false;
    put_flavors(out);
    Ok(())
}
