//! File attributes (fattr4): the bitmap, and encoding a node's attributes in
//! ascending attribute order as RFC 7530 §5 requires.

use super::consts::{attr, Status, NF4BLK, NF4CHR, NF4DIR, NF4FIFO, NF4LNK, NF4REG, NF4SOCK};
use super::idmap::{self, IdKind};
use super::view::ExportView;
use crate::catalog::{Node, NodeKind};
use crate::config::Config;
use crate::xdr::{Decoder, Encoder, XdrResult};

/// Attribute numbers go up to 55, so three words are plenty; longer request
/// bitmaps are accepted and their extra bits ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bitmap(pub [u32; 3]);

impl Bitmap {
    pub fn decode(d: &mut Decoder<'_>) -> XdrResult<Bitmap> {
        let n = d.count(8, 4)?;
        let mut b = Bitmap::default();
        for i in 0..n {
            let w = d.u32()?;
            if i < 3 {
                b.0[i] = w;
            }
        }
        Ok(b)
    }

    pub fn encode(&self, e: &mut Encoder) {
        let n = self.0.iter().rposition(|w| *w != 0).map_or(0, |i| i + 1);
        e.u32(n as u32);
        for w in &self.0[..n] {
            e.u32(*w);
        }
    }

    pub fn of(attrs: &[u32]) -> Bitmap {
        let mut b = Bitmap::default();
        for a in attrs {
            b.set(*a);
        }
        b
    }

    pub fn set(&mut self, a: u32) {
        if (a as usize) < 96 {
            self.0[a as usize / 32] |= 1 << (a % 32);
        }
    }

    pub fn contains(&self, a: u32) -> bool {
        (a as usize) < 96 && self.0[a as usize / 32] & (1 << (a % 32)) != 0
    }

    pub fn and(&self, o: &Bitmap) -> Bitmap {
        Bitmap([self.0[0] & o.0[0], self.0[1] & o.0[1], self.0[2] & o.0[2]])
    }

    pub fn is_subset_of(&self, o: &Bitmap) -> bool {
        self.and(o) == *self
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..96u32).filter(|a| self.contains(*a))
    }
}

/// Every attribute this server can report.
pub fn supported() -> Bitmap {
    use attr::*;
    Bitmap::of(&[
        SUPPORTED_ATTRS,
        TYPE,
        FH_EXPIRE_TYPE,
        CHANGE,
        SIZE,
        LINK_SUPPORT,
        SYMLINK_SUPPORT,
        NAMED_ATTR,
        FSID,
        UNIQUE_HANDLES,
        LEASE_TIME,
        RDATTR_ERROR,
        ACLSUPPORT,
        CANSETTIME,
        CASE_INSENSITIVE,
        CASE_PRESERVING,
        CHOWN_RESTRICTED,
        FILEHANDLE,
        FILEID,
        FILES_AVAIL,
        FILES_FREE,
        FILES_TOTAL,
        HIDDEN,
        HOMOGENEOUS,
        MAXFILESIZE,
        MAXLINK,
        MAXNAME,
        MAXREAD,
        MAXWRITE,
        MODE,
        NO_TRUNC,
        NUMLINKS,
        OWNER,
        OWNER_GROUP,
        RAWDEV,
        SPACE_AVAIL,
        SPACE_FREE,
        SPACE_TOTAL,
        SPACE_USED,
        TIME_ACCESS,
        TIME_CREATE,
        TIME_DELTA,
        TIME_METADATA,
        TIME_MODIFY,
        MOUNTED_ON_FILEID,
    ])
}

pub(crate) fn time(e: &mut Encoder, ns: i64) {
    e.i64(ns.div_euclid(1_000_000_000));
    e.u32(ns.rem_euclid(1_000_000_000) as u32);
}

/// Who asks for attributes: with `export.owner = "caller"` every node the
/// server has no owner for is reported as the caller's (AUTH_SYS uid/gid),
/// so the editor's Mac sees its own files as its user's, not root's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    pub uid: u32,
    pub gid: u32,
}

impl Viewer {
    pub fn of(cred: &crate::rpc::Credentials) -> Viewer {
        Viewer {
            uid: cred.uid(),
            gid: cred.gid(),
        }
    }
}

/// The owner string shown for `node` to `viewer` (SETATTR's, else the
/// export's, else the caller's uid).
pub(crate) fn owner_of(
    srv: &ExportView,
    meta: &crate::catalog::NodeMeta,
    viewer: Viewer,
) -> String {
    srv.export().owner_of(meta, viewer.uid)
}

/// The group string shown for `node` to `viewer`.
pub(crate) fn group_of(
    srv: &ExportView,
    meta: &crate::catalog::NodeMeta,
    viewer: Viewer,
) -> String {
    srv.export().group_of(meta, viewer.gid)
}

/// nfs_ftype4 of a node's kind.
pub fn type_of(kind: NodeKind) -> u32 {
    match kind {
        NodeKind::File => NF4REG,
        NodeKind::Folder => NF4DIR,
        NodeKind::Symlink => NF4LNK,
        NodeKind::Fifo => NF4FIFO,
        NodeKind::Socket => NF4SOCK,
        NodeKind::BlockDevice => NF4BLK,
        NodeKind::CharDevice => NF4CHR,
    }
}

/// A node's mode as sent: permission bits only (see [`Export::mode_of`]).
///
/// [`Export::mode_of`]: crate::export::Export::mode_of
pub(crate) fn mode_of(srv: &ExportView, node: &Node, meta: &crate::catalog::NodeMeta) -> u32 {
    srv.export().mode_of(node, meta)
}

/// Encodes the values (not the bitmap) of `attrs` for `node`. Attributes not
/// in [`supported`] must have been filtered out by the caller.
/// Encodes attribute `a` if its value is the same for every file system
/// this server shows (each export and the pseudo-root); false otherwise.
pub(crate) fn encode_fixed(a: u32, cfg: &Config, e: &mut Encoder) -> bool {
    match a {
        attr::SUPPORTED_ATTRS => advertised().encode(e),
        attr::FH_EXPIRE_TYPE => e.u32(0), // FH4_PERSISTENT
        attr::LINK_SUPPORT | attr::NAMED_ATTR => e.bool(false),
        attr::SYMLINK_SUPPORT
        | attr::UNIQUE_HANDLES
        | attr::CANSETTIME
        | attr::CASE_PRESERVING
        | attr::CHOWN_RESTRICTED
        | attr::HOMOGENEOUS
        | attr::NO_TRUNC => e.bool(true),
        attr::LEASE_TIME => e.u32(cfg.nfs.lease_time),
        attr::ACLSUPPORT => e.u32(0),
        attr::MAXFILESIZE => e.u64(i64::MAX as u64),
        attr::MAXLINK => e.u32(1),
        attr::MAXNAME => e.u32(super::consts::MAX_NAME as u32),
        attr::MAXREAD => e.u64(cfg.nfs.max_read as u64),
        attr::MAXWRITE => e.u64(cfg.nfs.max_write as u64),
        attr::TIME_DELTA => time(e, 1),
        _ => return false,
    }
    true
}

pub(crate) fn encode_values(
    srv: &ExportView,
    node: &Node,
    viewer: Viewer,
    attrs: &Bitmap,
    e: &mut Encoder,
) -> Result<(), Status> {
    let cfg = srv.config();
    // Before the metadata is locked (see `Export::link_count`).
    let numlinks = if attrs.contains(attr::NUMLINKS) {
        srv.link_count(node)
    } else {
        0
    };
    let meta = node.meta();
    let needs_volume = [
        attr::FILES_AVAIL,
        attr::FILES_FREE,
        attr::FILES_TOTAL,
        attr::SPACE_AVAIL,
        attr::SPACE_FREE,
        attr::SPACE_TOTAL,
    ]
    .iter()
    .any(|a| attrs.contains(*a));
    let vol = if needs_volume {
        srv.volume_stats()
    } else {
        Default::default()
    };
    for a in attrs.iter() {
        if encode_fixed(a, cfg, e) {
            continue;
        }
        match a {
            attr::TYPE => e.u32(type_of(node.kind)),
            attr::CHANGE => e.u64(meta.change),
            attr::SIZE => e.u64(meta.size),
            attr::FSID => {
                e.u64(cfg.export.export_id as u64);
                e.u64(0);
            }
            attr::RDATTR_ERROR => e.u32(Status::Ok.code()),
            attr::CASE_INSENSITIVE => e.bool(cfg.export.case_insensitive),
            attr::FILEHANDLE => e.opaque(&srv.handle_of(node)?),
            attr::FILEID => e.u64(node.fileid),
            attr::FILES_AVAIL => e.u64(vol.files_avail),
            attr::FILES_FREE => e.u64(vol.files_free),
            attr::FILES_TOTAL => e.u64(vol.files_total),
            attr::HIDDEN => e.bool(meta.hidden),
            attr::MODE => e.u32(mode_of(srv, node, &meta)),
            attr::NUMLINKS => e.u32(numlinks),
            attr::OWNER => e.string(&owner_of(srv, &meta, viewer)),
            attr::OWNER_GROUP => e.string(&group_of(srv, &meta, viewer)),
            attr::RAWDEV => {
                let (major, minor) = meta.special.as_ref().map_or((0, 0), |s| s.rdev);
                e.u32(major);
                e.u32(minor);
            }
            attr::SPACE_AVAIL => e.u64(vol.bytes_avail),
            attr::SPACE_FREE => e.u64(vol.bytes_free),
            attr::SPACE_TOTAL => e.u64(vol.bytes_total),
            attr::SPACE_USED => e.u64(meta.size.div_ceil(4096) * 4096),
            attr::TIME_ACCESS => time(e, meta.accessed_ns),
            attr::TIME_METADATA | attr::TIME_MODIFY => time(e, meta.modified_ns),
            attr::TIME_CREATE => time(e, meta.created_ns.unwrap_or(node.created_ns)),
            // An export's root under a pseudo-root is mounted on its entry
            // there, whose file id it shows too (`export::root_fileid`).
            attr::MOUNTED_ON_FILEID => e.u64(node.fileid),
            _ => {}
        }
    }
    Ok(())
}

/// Encodes a fattr4 (bitmap of what is returned + values) for the
/// requested attributes that are supported.
pub(crate) fn encode_fattr(
    srv: &ExportView,
    node: &Node,
    viewer: Viewer,
    requested: &Bitmap,
    e: &mut Encoder,
) -> Result<(), Status> {
    encode_fattr_with(requested, e, |returned, e| {
        encode_values(srv, node, viewer, returned, e)
    })
}

/// A fattr4 whose values `values` encodes (for the supported attributes
/// among those requested, in ascending order).
pub(crate) fn encode_fattr_with(
    requested: &Bitmap,
    e: &mut Encoder,
    values: impl FnOnce(&Bitmap, &mut Encoder) -> Result<(), Status>,
) -> Result<(), Status> {
    refuse_write_only(requested)?;
    let returned = requested.and(&supported());
    returned.encode(e);
    let len_at = e.placeholder();
    let start = e.len();
    values(&returned, e)?;
    let len = e.len() - start;
    e.patch_u32(len_at, len as u32);
    Ok(())
}

/// VERIFY / NVERIFY: do the client's attribute values equal ours?
pub(crate) fn matches(
    srv: &ExportView,
    node: &Node,
    viewer: Viewer,
    d: &mut Decoder<'_>,
) -> Result<bool, Status> {
    matches_with(d, |bitmap, e| encode_values(srv, node, viewer, bitmap, e))
}

/// VERIFY / NVERIFY against the values `values` encodes.
pub(crate) fn matches_with(
    d: &mut Decoder<'_>,
    values: impl FnOnce(&Bitmap, &mut Encoder) -> Result<(), Status>,
) -> Result<bool, Status> {
    let bitmap = Bitmap::decode(d)?;
    let given = d.opaque(usize::MAX)?;
    refuse_write_only(&bitmap)?;
    if !bitmap.is_subset_of(&supported()) {
        return Err(Status::AttrNotSupp);
    }
    if bitmap.contains(attr::RDATTR_ERROR) {
        return Err(Status::Inval);
    }
    let mut ours = Encoder::new();
    values(&bitmap, &mut ours)?;
    Ok(ours.buf == given)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_round_trip_and_trailing_zero_words() {
        let b = Bitmap::of(&[0, 1, 33, 55]);
        let mut e = Encoder::new();
        b.encode(&mut e);
        assert_eq!(e.buf.len(), 4 + 8);
        let got = Bitmap::decode(&mut Decoder::new(&e.buf)).unwrap();
        assert_eq!(got, b);
        assert_eq!(got.iter().collect::<Vec<_>>(), vec![0, 1, 33, 55]);
        let mut e = Encoder::new();
        Bitmap::default().encode(&mut e);
        assert_eq!(e.buf, [0, 0, 0, 0]);
        assert!(!supported().contains(12)); // acl
        assert!(supported().contains(attr::MOUNTED_ON_FILEID));
    }
}

/// A time to set (settime4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSet {
    Server,
    /// Nanoseconds since the epoch.
    Client(i64),
}

/// Attributes a client asks to set (SETATTR, or createattrs of OPEN and
/// CREATE), with the bitmap of those present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttrs {
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub owner_group: Option<String>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    /// time_create, nanoseconds since the epoch (Finder and copyfile set it
    /// with the other times; a refusal fails the whole copy).
    pub created: Option<i64>,
    /// The Mac's hidden flag (UF_HIDDEN).
    pub hidden: Option<bool>,
    pub bitmap: Bitmap,
}

const TIME_ACCESS_SET: u32 = 48;
const TIME_MODIFY_SET: u32 = 54;

/// The attributes this server can set.
/// What supported_attrs says: the readable attributes and the write-only
/// ones. The Mac sends a SETATTR only with attributes listed here
/// (kext/nfs4_subs.c: nfs_vattr_set_bitmap, "limit to what is supported by
/// server"): without time_modify_set a Finder copy or `touch` would lose
/// its times.
pub fn advertised() -> Bitmap {
    let mut b = supported();
    b.set(TIME_ACCESS_SET);
    b.set(TIME_MODIFY_SET);
    b
}

/// Write-only attributes have no value to read: asking GETATTR, READDIR,
/// VERIFY or NVERIFY for one is INVAL (RFC 7530 §5.5).
fn refuse_write_only(requested: &Bitmap) -> Result<(), Status> {
    if requested.contains(TIME_ACCESS_SET) || requested.contains(TIME_MODIFY_SET) {
        return Err(Status::Inval);
    }
    Ok(())
}

pub fn settable() -> Bitmap {
    Bitmap::of(&[
        attr::SIZE,
        attr::MODE,
        attr::OWNER,
        attr::OWNER_GROUP,
        TIME_ACCESS_SET,
        TIME_MODIFY_SET,
        attr::TIME_CREATE,
        attr::HIDDEN,
    ])
}

/// An nfstime4.
fn nfstime(d: &mut Decoder<'_>) -> Result<i64, Status> {
    let secs = d.i64()?;
    let nsecs = d.u32()?;
    if nsecs >= 1_000_000_000 {
        return Err(Status::Inval);
    }
    Ok(secs
        .saturating_mul(1_000_000_000)
        .saturating_add(nsecs as i64))
}

fn settime(d: &mut Decoder<'_>) -> Result<TimeSet, Status> {
    match d.u32()? {
        0 => Ok(TimeSet::Server),
        1 => Ok(TimeSet::Client(nfstime(d)?)),
        _ => Err(Status::Inval),
    }
}

/// An owner or group string, kept as the decimal id it names.
fn owner_string(d: &mut Decoder<'_>, kind: IdKind) -> Result<String, Status> {
    let raw = d.opaque(super::consts::NFS4_OPAQUE_LIMIT)?;
    let s = std::str::from_utf8(raw).map_err(|_| Status::BadOwner)?;
    idmap::canonical(s, kind)
}

/// Decodes a fattr4 of attributes to set. Read-only attributes in it are
/// NFS4ERR_INVAL, unknown ones NFS4ERR_ATTRNOTSUPP (RFC 7530 §16.32.5).
pub fn decode_settable(d: &mut Decoder<'_>) -> Result<SetAttrs, Status> {
    let bitmap = Bitmap::decode(d)?;
    let values = d.opaque(usize::MAX)?;
    let writable = settable();
    let mut readable_or_writable = supported();
    for a in writable.iter() {
        readable_or_writable.set(a);
    }
    if !bitmap.is_subset_of(&readable_or_writable) {
        return Err(Status::AttrNotSupp);
    }
    if !bitmap.is_subset_of(&writable) {
        return Err(Status::Inval);
    }
    let mut v = Decoder::new(values);
    let mut out = SetAttrs {
        bitmap,
        ..SetAttrs::default()
    };
    for a in bitmap.iter() {
        match a {
            attr::SIZE => out.size = Some(v.u64()?),
            attr::MODE => out.mode = Some(v.u32()? & 0o7777),
            attr::OWNER => out.owner = Some(owner_string(&mut v, IdKind::User)?),
            attr::OWNER_GROUP => out.owner_group = Some(owner_string(&mut v, IdKind::Group)?),
            attr::TIME_CREATE => out.created = Some(nfstime(&mut v)?),
            attr::HIDDEN => out.hidden = Some(v.bool()?),
            TIME_ACCESS_SET => out.atime = Some(settime(&mut v)?),
            TIME_MODIFY_SET => out.mtime = Some(settime(&mut v)?),
            _ => return Err(Status::AttrNotSupp),
        }
    }
    if v.remaining() != 0 {
        return Err(Status::BadXdr);
    }
    Ok(out)
}
