//! NFSv3 results (RFC 1813 §3.3): the typed answers handlers return and
//! their XDR. Every answer carries the attributes RFC 1813 asks for even
//! on failure (post_op_attr, wcc_data), so clients keep their caches
//! right.

use std::sync::Arc;

use super::args::Time3;
use super::{Call, Nfs3Result, Nfs3Status};
use crate::catalog::{Node, NodeKind};
use crate::rpc::ReplyBody;
use crate::storage::VolumeStats;
use crate::xdr::Encoder;

/// A node's size, mtime and ctime before an operation (wcc_attr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WccAttr {
    pub size: u64,
    pub mtime_ns: i64,
    /// The change attribute, shown as ctime (see [`ctime_of`]).
    pub change: u64,
}

/// wcc_data: a folder's (or file's) attributes before and after.
#[derive(Debug, Clone, Default)]
pub struct Wcc {
    pub before: Option<WccAttr>,
    pub after: Option<Arc<Node>>,
}

impl Wcc {
    /// Notes `node` as it is now, before the operation changes it.
    pub fn before(node: &Arc<Node>) -> Wcc {
        let m = node.meta();
        Wcc {
            before: Some(WccAttr {
                size: m.size,
                mtime_ns: m.modified_ns,
                change: m.change,
            }),
            after: Some(node.clone()),
        }
    }
}

/// A result with the object's attributes (post_op_attr), success or not.
pub struct Answer<T> {
    pub result: Nfs3Result<T>,
    pub attrs: Option<Arc<Node>>,
}

impl<T> Answer<T> {
    pub fn failed(status: Nfs3Status, attrs: Option<Arc<Node>>) -> Answer<T> {
        Answer {
            result: Err(status),
            attrs,
        }
    }
}

/// A result with wcc_data.
pub struct WccAnswer<T> {
    pub result: Nfs3Result<T>,
    pub wcc: Wcc,
}

#[derive(Debug)]
pub struct ReadOk {
    pub data: bytes::Bytes,
    pub eof: bool,
}

#[derive(Debug)]
pub struct WriteOk {
    pub count: u32,
    pub committed: u32,
}

pub struct RenameAnswer {
    pub result: Nfs3Result<()>,
    pub from: Wcc,
    pub to: Wcc,
}

pub struct LinkAnswer {
    pub result: Nfs3Result<()>,
    pub file: Option<Arc<Node>>,
    pub dir: Wcc,
}

/// One READDIR(PLUS) entry; `node` (attributes and handle) for PLUS only.
#[derive(Debug)]
pub struct DirEntry {
    pub fileid: u64,
    pub name: String,
    pub cookie: u64,
    pub node: Option<Arc<Node>>,
}

#[derive(Debug)]
pub struct DirPage {
    pub entries: Vec<DirEntry>,
    pub eof: bool,
    pub plus: bool,
}

/// FSINFO3resok's values.
#[derive(Debug)]
pub struct FsInfo {
    pub rtmax: u32,
    pub wtmax: u32,
    pub dtpref: u32,
}

/// FSF3_* properties.
const FSF3_SYMLINK: u32 = 0x2;
const FSF3_HOMOGENEOUS: u32 = 0x8;
const FSF3_CANSETTIME: u32 = 0x10;

/// The id shown for an owner or group that is not a number.
const NOBODY: u32 = 65534;

/// The encoded size of a fattr3.
pub const FATTR3_SIZE: usize = 84;

/// ftype3 of a node's kind (the same numbers as NFSv4's nfs_ftype4).
pub fn type3(kind: NodeKind) -> u32 {
    match kind {
        NodeKind::File => 1,
        NodeKind::Folder => 2,
        NodeKind::BlockDevice => 3,
        NodeKind::CharDevice => 4,
        NodeKind::Symlink => 5,
        NodeKind::Socket => 6,
        NodeKind::Fifo => 7,
    }
}

/// ctime as NFSv3 shows it: the change attribute, which moves (and never
/// goes back) whenever the node or, for a folder, its listing changes —
/// also by the MarkBase app's edits. NFSv3 clients revalidate their caches
/// on ctime and mtime; the change attribute is a nanosecond clock value
/// raised past every earlier one, so it reads as a time.
pub fn ctime_of(change: u64) -> Time3 {
    Time3::from_ns(change.min(i64::MAX as u64) as i64)
}

fn time(e: &mut Encoder, t: Time3) {
    e.u32(t.seconds);
    e.u32(t.nseconds);
}

/// fattr3 of `node`, as `call`'s caller sees it.
pub fn fattr3(call: &Call<'_>, e: &mut Encoder, node: &Node) {
    let export = call.export;
    // Before the metadata is locked (see `Export::link_count`).
    let numlinks = export.link_count(node);
    let m = node.meta();
    e.u32(type3(node.kind));
    e.u32(export.mode_of(node, &m));
    e.u32(numlinks);
    e.u32(export.owner_uid(&m, call.cred.uid()).unwrap_or(NOBODY));
    e.u32(export.group_gid(&m, call.cred.gid()).unwrap_or(NOBODY));
    e.u64(m.size);
    e.u64(m.size.div_ceil(4096) * 4096);
    let (major, minor) = m.special.as_ref().map_or((0, 0), |s| s.rdev);
    e.u32(major);
    e.u32(minor);
    e.u64(export.config().export.export_id as u64);
    e.u64(node.fileid);
    time(e, Time3::from_ns(m.accessed_ns));
    time(e, Time3::from_ns(m.modified_ns));
    time(e, ctime_of(m.change));
}

fn post_op_attr(call: &Call<'_>, e: &mut Encoder, node: Option<&Arc<Node>>) {
    match node {
        Some(n) => {
            e.bool(true);
            fattr3(call, e, n);
        }
        None => e.bool(false),
    }
}

fn wcc_data(call: &Call<'_>, e: &mut Encoder, wcc: &Wcc) {
    match &wcc.before {
        Some(b) => {
            e.bool(true);
            e.u64(b.size);
            time(e, Time3::from_ns(b.mtime_ns));
            time(e, ctime_of(b.change));
        }
        None => e.bool(false),
    }
    post_op_attr(call, e, wcc.after.as_ref());
}

/// post_op_fh3 of `node`.
fn post_op_fh(call: &Call<'_>, e: &mut Encoder, node: &Node) {
    match call
        .export
        .handle_within(node, crate::export::handle::NFS3_FHSIZE)
    {
        Ok(fh) => {
            e.bool(true);
            e.opaque(&fh);
        }
        Err(_) => e.bool(false),
    }
}

fn status<T>(e: &mut Encoder, r: &Nfs3Result<T>) {
    e.u32(match r {
        Ok(_) => 0,
        Err(s) => s.code(),
    });
}

pub fn getattr(call: &Call<'_>, out: &mut ReplyBody, r: Nfs3Result<Arc<Node>>) {
    let e = out.enc();
    status(e, &r);
    if let Ok(n) = r {
        fattr3(call, e, &n);
    }
}

pub fn wcc_only(call: &Call<'_>, out: &mut ReplyBody, r: WccAnswer<()>) {
    let e = out.enc();
    status(e, &r.result);
    wcc_data(call, e, &r.wcc);
}

/// LOOKUP: the object's handle and attributes, and the folder's.
pub fn lookup(call: &Call<'_>, out: &mut ReplyBody, r: Answer<Arc<Node>>) {
    let e = out.enc();
    status(e, &r.result);
    if let Ok(n) = &r.result {
        match call
            .export
            .handle_within(n, crate::export::handle::NFS3_FHSIZE)
        {
            Ok(fh) => e.opaque(&fh),
            Err(_) => e.opaque(&[]),
        }
        post_op_attr(call, e, Some(n));
    }
    post_op_attr(call, e, r.attrs.as_ref());
}

pub fn access(call: &Call<'_>, out: &mut ReplyBody, r: Answer<u32>) {
    let e = out.enc();
    status(e, &r.result);
    post_op_attr(call, e, r.attrs.as_ref());
    if let Ok(bits) = r.result {
        e.u32(bits);
    }
}

pub fn readlink(call: &Call<'_>, out: &mut ReplyBody, r: Answer<Vec<u8>>) {
    let e = out.enc();
    status(e, &r.result);
    post_op_attr(call, e, r.attrs.as_ref());
    if let Ok(target) = &r.result {
        e.opaque(target);
    }
}

pub fn read(call: &Call<'_>, out: &mut ReplyBody, r: Answer<ReadOk>) {
    let e = out.enc();
    status(e, &r.result);
    post_op_attr(call, e, r.attrs.as_ref());
    if let Ok(ok) = r.result {
        let e = out.enc();
        e.u32(ok.data.len() as u32);
        e.bool(ok.eof);
        out.opaque_data(ok.data);
    }
}

pub fn write(call: &Call<'_>, out: &mut ReplyBody, r: WccAnswer<WriteOk>) {
    let e = out.enc();
    status(e, &r.result);
    wcc_data(call, e, &r.wcc);
    if let Ok(ok) = r.result {
        e.u32(ok.count);
        e.u32(ok.committed);
        e.fixed(&call.export.write_verifier());
    }
}

/// CREATE, MKDIR, SYMLINK, MKNOD: the new object's handle and attributes,
/// and the folder's wcc_data.
pub fn created(call: &Call<'_>, out: &mut ReplyBody, r: WccAnswer<Arc<Node>>) {
    let e = out.enc();
    status(e, &r.result);
    if let Ok(n) = &r.result {
        post_op_fh(call, e, n);
        post_op_attr(call, e, Some(n));
    }
    wcc_data(call, e, &r.wcc);
}

pub fn rename(call: &Call<'_>, out: &mut ReplyBody, r: RenameAnswer) {
    let e = out.enc();
    status(e, &r.result);
    wcc_data(call, e, &r.from);
    wcc_data(call, e, &r.to);
}

pub fn link(call: &Call<'_>, out: &mut ReplyBody, r: LinkAnswer) {
    let e = out.enc();
    status(e, &r.result);
    post_op_attr(call, e, r.file.as_ref());
    wcc_data(call, e, &r.dir);
}

/// READDIR and READDIRPLUS (the cookie verifier is always zero: cookies
/// derive from the entries and stay valid while the folder changes).
pub fn readdir(call: &Call<'_>, out: &mut ReplyBody, r: Answer<DirPage>) {
    let e = out.enc();
    status(e, &r.result);
    post_op_attr(call, e, r.attrs.as_ref());
    if let Ok(page) = r.result {
        e.fixed(&[0u8; 8]);
        for entry in &page.entries {
            e.bool(true);
            e.u64(entry.fileid);
            e.string(&entry.name);
            e.u64(entry.cookie);
            if page.plus {
                post_op_attr(call, e, entry.node.as_ref());
                match &entry.node {
                    Some(n) => post_op_fh(call, e, n),
                    None => e.bool(false),
                }
            }
        }
        e.bool(false);
        e.bool(page.eof);
    }
}

pub fn fsstat(call: &Call<'_>, out: &mut ReplyBody, r: Answer<VolumeStats>) {
    let e = out.enc();
    status(e, &r.result);
    post_op_attr(call, e, r.attrs.as_ref());
    if let Ok(v) = r.result {
        e.u64(v.bytes_total);
        e.u64(v.bytes_free);
        e.u64(v.bytes_avail);
        e.u64(v.files_total);
        e.u64(v.files_free);
        e.u64(v.files_avail);
        e.u32(0); // invarsec: may change at any time
    }
}

pub fn fsinfo(call: &Call<'_>, out: &mut ReplyBody, r: Answer<FsInfo>) {
    let e = out.enc();
    status(e, &r.result);
    post_op_attr(call, e, r.attrs.as_ref());
    if let Ok(f) = r.result {
        e.u32(f.rtmax);
        e.u32(f.rtmax);
        e.u32(4096);
        e.u32(f.wtmax);
        e.u32(f.wtmax);
        e.u32(4096);
        e.u32(f.dtpref);
        e.u64(i64::MAX as u64);
        time(
            e,
            Time3 {
                seconds: 0,
                nseconds: 1,
            },
        );
        e.u32(FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME);
    }
}

pub fn pathconf(call: &Call<'_>, out: &mut ReplyBody, r: Answer<()>) {
    let e = out.enc();
    status(e, &r.result);
    post_op_attr(call, e, r.attrs.as_ref());
    if r.result.is_ok() {
        e.u32(1); // linkmax: no hard links
        e.u32(crate::catalog::MAX_NAME as u32);
        e.bool(true); // no_trunc
        e.bool(true); // chown_restricted
        e.bool(call.export.config().export.case_insensitive);
        e.bool(true); // case_preserving
    }
}

pub fn commit(call: &Call<'_>, out: &mut ReplyBody, r: WccAnswer<()>) {
    let e = out.enc();
    status(e, &r.result);
    wcc_data(call, e, &r.wcc);
    if r.result.is_ok() {
        e.fixed(&call.export.write_verifier());
    }
}

/// A refusal made before a procedure's arguments are read (a machine the
/// export does not serve, a change to a read-only export): the status and
/// the procedure's failure arm with every attribute absent, which RFC 1813
/// allows (pre_op_attr, post_op_attr FALSE). False for a procedure number
/// that has no such arm.
pub fn refused(e: &mut Encoder, procedure: u32, status: Nfs3Status) -> bool {
    use super::proc3::*;
    // Optional attributes in each procedure's resfail: one word each.
    let absent = match procedure {
        GETATTR => 0,
        LOOKUP | ACCESS | READLINK | READ | READDIR | READDIRPLUS | FSSTAT | FSINFO | PATHCONF => 1,
        SETATTR | WRITE | CREATE | MKDIR | SYMLINK | MKNOD | REMOVE | RMDIR | COMMIT => 2,
        // LINK: the file's post_op_attr and the folder's wcc_data.
        LINK => 3,
        // RENAME: both folders' wcc_data.
        RENAME => 4,
        _ => return false,
    };
    e.u32(status.code());
    for _ in 0..absent {
        e.bool(false);
    }
    true
}
