//! The server as Apple's NFSv4.0 client drives it. macOS cannot run here,
//! so this client replays the COMPOUNDs the kext sends — each shape names
//! the Apple source it mirrors (apple-oss-distributions/NFS, `kext/…`) —
//! and reads every reply as strictly as `nfs4_parsefattr` does.

mod common;

use std::collections::HashSet;

use common::*;
use markbase_nfs::nfs4::attrs::Bitmap;
use markbase_nfs::nfs4::consts::{attr, op, Status, NFS4_PROGRAM};
use markbase_nfs::rpc::message::{decode_reply, ReplyStatus};
use markbase_nfs::rpc::Credentials;
use markbase_nfs::tools::client::{CompoundArgs, Nfs4Client, RpcClient};
use markbase_nfs::xdr::{Decoder, Encoder};

/// The editor's uid and gid on the Mac (the first user account).
const MAC_UID: u32 = 501;
const MAC_GID: u32 = 20;

/// `nfs_getattr_bitmap` (kext/nfs_vfsops.c: nfs_vfs_init, from the
/// NFS4_DEFAULT_ATTRIBUTES ∩ NFS4_PER_OBJECT_ATTRIBUTES macros of
/// kext/nfs_client.h), NAMED_ATTR dropped as `nfsm_chain_add_bitmap_supported`
/// does without the `namedattr` mount option.
const GETATTR_BITMAP: [u32; 20] = [
    1, 3, 4, 8, 14, 20, 25, 28, 33, 35, 36, 37, 41, 45, 47, 49, 50, 52, 53, 55,
];
/// NFS4_DEFAULT_ATTRIBUTES (v4.0), what `nfs4_mount` asks of the root.
const MOUNT_BITMAP: [u32; 43] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 16, 17, 18, 20, 21, 22, 23, 25, 26, 27, 28, 29, 30,
    31, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 47, 49, 50, 52, 53, 55,
];
/// `nfs4_getattr_write_bitmap`: what follows every WRITE.
const WRITE_BITMAP: [u32; 5] = [1, 3, 4, 52, 53];
/// READDIR entry attributes with rdirplus (on by default, kext
/// nfs_vfsops.c: mountnfs): the getattr bitmap + FILEHANDLE + RDATTR_ERROR.
fn readdir_bitmap() -> Vec<u32> {
    let mut v: Vec<u32> = GETATTR_BITMAP.to_vec();
    v.extend([attr::FILEHANDLE, attr::RDATTR_ERROR]);
    v.sort();
    v
}

/// What `nfs4_parsefattr` (kext/nfs4_subs.c) takes from a fattr4, failing
/// the whole reply where the kext does.
#[derive(Debug, Default, Clone)]
struct MacAttrs {
    kind: Option<u32>,
    size: Option<u64>,
    change: Option<u64>,
    fileid: Option<u64>,
    mounted_on_fileid: Option<u64>,
    mode: Option<u32>,
    owner: Option<String>,
    group: Option<String>,
    filehandle: Option<Vec<u8>>,
    case_insensitive: Option<bool>,
    time_create: Option<(i64, u32)>,
    time_modify: Option<(i64, u32)>,
    hidden: Option<bool>,
    supported: Option<Bitmap>,
}

fn nfstime(d: &mut Decoder<'_>) -> Result<(i64, u32), String> {
    Ok((
        d.i64().map_err(|e| e.to_string())?,
        d.u32().map_err(|e| e.to_string())?,
    ))
}

/// Parses a fattr4 as the kext does: EBADRPC for mode > 07777, owner strings
/// of 1024 bytes or more, a FILEHANDLE over 128 bytes, values that overrun
/// their length, or an attribute the server does not list as supported.
fn parse_fattr(d: &mut Decoder<'_>) -> Result<MacAttrs, String> {
    let e = |x: markbase_nfs::xdr::XdrError| x.to_string();
    let bitmap = Bitmap::decode(d).map_err(e)?;
    let vals = d.opaque(usize::MAX).map_err(e)?;
    let mut v = Decoder::new(vals);
    let mut a = MacAttrs::default();
    for n in bitmap.iter() {
        match n {
            0 => a.supported = Some(Bitmap::decode(&mut v).map_err(e)?),
            1 => a.kind = Some(v.u32().map_err(e)?),
            2 | 10 | 11 | 13 | 28 | 29 => {
                v.u32().map_err(e)?;
            }
            35 => {
                v.u32().map_err(e)?;
            }
            3 => a.change = Some(v.u64().map_err(e)?),
            4 => a.size = Some(v.u64().map_err(e)?),
            25 => a.hidden = Some(v.bool().map_err(e)?),
            5 | 6 | 7 | 9 | 14 | 15 | 17 | 18 | 26 | 34 => {
                v.bool().map_err(e)?;
            }
            16 => a.case_insensitive = Some(v.bool().map_err(e)?),
            8 => {
                v.u64().map_err(e)?;
                v.u64().map_err(e)?;
            }
            19 => {
                let fh = v.opaque(usize::MAX).map_err(e)?;
                if fh.len() > 128 {
                    return Err(format!("FILEHANDLE of {} bytes", fh.len()));
                }
                a.filehandle = Some(fh.to_vec());
            }
            20 => a.fileid = Some(v.u64().map_err(e)?),
            21 | 22 | 23 | 27 | 30 | 31 | 42 | 43 | 44 | 45 => {
                v.u64().map_err(e)?;
            }
            33 => {
                let mode = v.u32().map_err(e)?;
                if mode > 0o7777 {
                    return Err(format!("mode {mode:#o} > 07777"));
                }
                a.mode = Some(mode);
            }
            36 | 37 => {
                let s = v.opaque(usize::MAX).map_err(e)?;
                if s.len() >= 1024 {
                    return Err(format!("owner string of {} bytes", s.len()));
                }
                let s = String::from_utf8_lossy(s).into_owned();
                if n == 36 {
                    a.owner = Some(s);
                } else {
                    a.group = Some(s);
                }
            }
            41 => {
                v.u32().map_err(e)?;
                v.u32().map_err(e)?;
            }
            47 | 49 | 51 | 52 => {
                nfstime(&mut v)?;
            }
            53 => a.time_modify = Some(nfstime(&mut v)?),
            50 => a.time_create = Some(nfstime(&mut v)?),
            55 => a.mounted_on_fileid = Some(v.u64().map_err(e)?),
            other => return Err(format!("attribute {other} returned but not parsed")),
        }
    }
    if v.remaining() != 0 {
        return Err(format!("{} attribute bytes left over", v.remaining()));
    }
    // The kext takes mounted_on_fileid as the inode number: it must be the
    // fileid, or `ls -i`, Finder and the name cache disagree.
    if let (Some(f), Some(m)) = (a.fileid, a.mounted_on_fileid) {
        if f != m {
            return Err(format!("fileid {f} != mounted_on_fileid {m}"));
        }
    }
    Ok(a)
}

/// One Mac mount: one connection, one client id, one open-owner per uid.
struct Mac {
    rpc: RpcClient,
    clientid: u64,
    /// Open-owner seqid (`noo_seqid`, starting at 0: kext/nfs4_vnops.c).
    seqid: u32,
    root: Vec<u8>,
    supported: Bitmap,
}

type Reply = Result<Vec<u8>, (usize, u32)>;

impl Mac {
    /// Mounts as `mount_nfs -o vers=4` does (kext/nfs_socket.c:
    /// nfs_connect_search_ping, nfs_connect_setup; kext/nfs4_subs.c:
    /// nfs4_setclientid, nfs4_init_clientid; kext/nfs_vfsops.c: nfs4_mount).
    fn mount(addr: std::net::SocketAddr) -> Mac {
        let mut rpc = RpcClient::connect(addr).unwrap();
        // AUTH_SYS with a zero-length machine name (kext/nfs_subs.c:
        // nfsm_rpchead2). NULL ping with the kernel's credential (uid 0).
        rpc.credentials = Credentials::sys("", 0, 0, &[]);
        let (st, _) = rpc.call(NFS4_PROGRAM, 4, 0, &[]).unwrap();
        assert_eq!(st, ReplyStatus::Success);
        rpc.credentials = Credentials::sys(
            "",
            MAC_UID,
            MAC_GID,
            &[MAC_GID, 12, 61, 79, 80, 81, 98, 701],
        );
        // The id: a 4-byte counter (little-endian on the Mac), the en0 MAC,
        // the server's raw sockaddr_in, then mntfrom and mnton, NUL-ended.
        let mut id = 0u32.to_le_bytes().to_vec();
        id.extend([0x3c, 0x22, 0xfb, 0x01, 0x02, 0x03]);
        id.extend([16, 2]);
        id.extend(addr.port().to_be_bytes());
        id.extend([127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        id.extend(b"127.0.0.1:/\0/Volumes/MarkBase\0");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let verifier = (now.as_secs() << 32) | now.subsec_micros() as u64;
        let mut mac = Mac {
            rpc,
            clientid: 0,
            seqid: 0,
            root: vec![],
            supported: Bitmap::default(),
        };
        let body = mac
            .call(
                "setclid",
                CompoundArgs::new().op(op::SETCLIENTID, |e| {
                    e.u64(verifier);
                    e.opaque(&id);
                    e.u32(0x4000_0000);
                    e.string("tcp");
                    e.string("127.0.0.1.3.233");
                    e.u32(1);
                }),
            )
            .unwrap();
        let mut d = Decoder::new(&body);
        skip_op(&mut d, op::SETCLIENTID);
        mac.clientid = d.u64().unwrap();
        let confirm: [u8; 8] = d.array().unwrap();
        let clientid = mac.clientid;
        mac.call(
            "setclid_conf",
            CompoundArgs::new().op(op::SETCLIENTID_CONFIRM, |e| {
                e.u64(clientid);
                e.fixed(&confirm);
            }),
        )
        .unwrap();
        // No path components: PUTROOTFH, GETATTR(DEFAULT + FILEHANDLE).
        let mut bitmap = MOUNT_BITMAP.to_vec();
        bitmap.push(attr::FILEHANDLE);
        let body = mac
            .call("mount", CompoundArgs::new().putrootfh().getattr(&bitmap))
            .unwrap();
        let mut d = Decoder::new(&body);
        skip_op(&mut d, op::PUTROOTFH);
        skip_op(&mut d, op::GETATTR);
        let a = parse_fattr(&mut d).expect("mount GETATTR");
        assert_eq!(a.kind, Some(2), "the root must be a directory");
        mac.root = a.filehandle.expect("mount didn't return filehandle?");
        mac.supported = a.supported.expect("supported_attrs");
        mac
    }

    /// Mounts `server:/name/…` as `nfs4_mount` walks it (kext/nfs_vfsops.c):
    /// per component one COMPOUND of PUTROOTFH (first) or PUTFH(parent),
    /// LOOKUP, GETFH, GETATTR(NFS4_DEFAULT_ATTRIBUTES without NAMED_ATTR);
    /// SECINFO of the last component (kext/nfs4_subs.c: nfs4_secinfo_rpc,
    /// PUTROOTFH when the parent is the root), any error of which fails the
    /// mount; then PUTFH + GETATTR of the mounted folder.
    fn mount_path(addr: std::net::SocketAddr, path: &str) -> Result<Mac, String> {
        let mut mac = Mac::mount(addr);
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let bitmap: Vec<u32> = MOUNT_BITMAP
            .iter()
            .copied()
            .filter(|a| *a != attr::NAMED_ATTR)
            .collect();
        let mut dir: Option<Vec<u8>> = None;
        let mut fh = Vec::new();
        for (i, name) in components.iter().enumerate() {
            let start = match &dir {
                Some(d) => CompoundArgs::new().putfh(d),
                None => CompoundArgs::new().putrootfh(),
            };
            let args = start.lookup(name).getfh().getattr(&bitmap);
            let body = mac
                .call("mount", args)
                .map_err(|(at, s)| format!("LOOKUP {name}: op {at} answered {s}"))?;
            let mut d = Decoder::new(&body);
            skip_op(
                &mut d,
                if dir.is_some() {
                    op::PUTFH
                } else {
                    op::PUTROOTFH
                },
            );
            skip_op(&mut d, op::LOOKUP);
            skip_op(&mut d, op::GETFH);
            fh = d.opaque(128).unwrap().to_vec();
            skip_op(&mut d, op::GETATTR);
            let a = parse_fattr(&mut d)?;
            if a.kind != Some(2) {
                return Err(format!("{name} is not a folder"));
            }
            if i + 1 == components.len() {
                let start = match &dir {
                    Some(d) => CompoundArgs::new().putfh(d),
                    None => CompoundArgs::new().putrootfh(),
                };
                mac.call("secinfo", start.op(op::SECINFO, |e| e.string(name)))
                    .map_err(|(at, s)| format!("SECINFO {name}: op {at} answered {s}"))?;
            }
            dir = Some(fh.clone());
        }
        let body = mac
            .call("mount", CompoundArgs::new().putfh(&fh).getattr(&bitmap))
            .map_err(|(at, s)| format!("GETATTR of the mount: op {at} answered {s}"))?;
        let mut d = Decoder::new(&body);
        skip_op(&mut d, op::PUTFH);
        skip_op(&mut d, op::GETATTR);
        parse_fattr(&mut d)?;
        mac.root = fh;
        Ok(mac)
    }

    /// Sends one COMPOUND; the result array, or (index, status) of the op
    /// that failed.
    fn call(&mut self, tag: &str, args: CompoundArgs) -> Reply {
        let (st, body) = self
            .rpc
            .call(NFS4_PROGRAM, 4, 1, &args.encode(tag, 0))
            .unwrap();
        assert_eq!(st, ReplyStatus::Success);
        compound_result(&body)
    }

    /// The kext's bitmaps are ANDed with the server's supported_attrs
    /// (`nfsm_chain_add_bitmap_supported`, kext/nfsm_subs.h).
    fn masked(&self, attrs: &[u32]) -> Vec<u32> {
        attrs
            .iter()
            .copied()
            .filter(|a| self.supported.contains(*a))
            .collect()
    }

    /// LOOKUP (kext/nfs4_vnops.c: nfs4_lookup_rpc_async): PUTFH(dir),
    /// GETATTR(dir), LOOKUP, GETFH, GETATTR.
    fn lookup(&mut self, dir: &[u8], name: &str) -> Result<(Vec<u8>, MacAttrs), u32> {
        let bm = self.masked(&GETATTR_BITMAP);
        let args = CompoundArgs::new()
            .putfh(dir)
            .getattr(&bm)
            .lookup(name)
            .getfh()
            .getattr(&bm);
        let body = self.call("lookup", args).map_err(|(_, s)| s)?;
        let mut d = Decoder::new(&body);
        skip_op(&mut d, op::PUTFH);
        skip_op(&mut d, op::GETATTR);
        parse_fattr(&mut d).unwrap();
        skip_op(&mut d, op::LOOKUP);
        skip_op(&mut d, op::GETFH);
        let fh = d.opaque(128).unwrap().to_vec();
        skip_op(&mut d, op::GETATTR);
        Ok((fh, parse_fattr(&mut d).unwrap()))
    }

    fn getattr(&mut self, fh: &[u8]) -> MacAttrs {
        let bm = self.masked(&GETATTR_BITMAP);
        let body = self
            .call("getattr", CompoundArgs::new().putfh(fh).getattr(&bm))
            .unwrap();
        let mut d = Decoder::new(&body);
        skip_op(&mut d, op::PUTFH);
        skip_op(&mut d, op::GETATTR);
        parse_fattr(&mut d).unwrap()
    }

    /// READDIR (kext/nfs4_vnops.c: nfs4_readdir_rpc): PUTFH, GETATTR(dir),
    /// READDIR with dircount 32768 and maxcount = rsize (1 MiB with
    /// `rwsize=1048576`); cookies ≤ 2 restart at 0, so the server must
    /// never hand them out. Returns every (name, attrs).
    fn readdir(&mut self, dir: &[u8]) -> Vec<(String, MacAttrs)> {
        let bm = self.masked(&GETATTR_BITMAP);
        let entry_bm = Bitmap::of(&self.masked(&readdir_bitmap()));
        let mut cookie = 0u64;
        let mut verf = [0u8; 8];
        let mut out = Vec::new();
        loop {
            let args = CompoundArgs::new()
                .putfh(dir)
                .getattr(&bm)
                .op(op::READDIR, |e| {
                    e.u64(cookie);
                    e.fixed(&verf);
                    e.u32(32768);
                    e.u32(1 << 20);
                    entry_bm.encode(e);
                });
            let body = self.call("readdirplus", args).expect("READDIR");
            let mut d = Decoder::new(&body);
            skip_op(&mut d, op::PUTFH);
            skip_op(&mut d, op::GETATTR);
            parse_fattr(&mut d).unwrap();
            skip_op(&mut d, op::READDIR);
            verf = d.array().unwrap();
            while d.bool().unwrap() {
                let c = d.u64().unwrap();
                assert!(c > 2, "cookie {c} would restart the listing");
                let name = d.opaque(usize::MAX).unwrap();
                assert!(
                    !name.is_empty() && name.len() <= 255,
                    "name of {} bytes",
                    name.len()
                );
                let name = String::from_utf8(name.to_vec()).expect("UTF-8 name");
                let a = parse_fattr(&mut d).unwrap_or_else(|e| panic!("{name:?}: {e}"));
                assert!(a.filehandle.is_some(), "{name:?}: no FILEHANDLE");
                out.push((name, a));
                cookie = c;
            }
            if d.bool().unwrap() {
                return out;
            }
        }
    }

    /// OPEN (kext/nfs4_vnops.c: nfs4_open_rpc_internal): PUTFH(dir),
    /// SAVEFH, OPEN, GETATTR(+FILEHANDLE), RESTOREFH, GETATTR(dir). The
    /// open-owner is the uid, 4 bytes big-endian; share_deny is always NONE;
    /// creates ask for BOTH (nfs4_vnop_create) with UNCHECKED4 + MODE or
    /// EXCLUSIVE4 + a verifier. Then OPEN_CONFIRM when the server asks.
    fn open(&mut self, dir: &[u8], name: &str, how: MacCreate) -> Result<MacOpen, u32> {
        let (seqid, clientid) = (self.seqid, self.clientid);
        let mut obj_bm = self.masked(&GETATTR_BITMAP);
        obj_bm.push(attr::FILEHANDLE);
        obj_bm.sort();
        let dir_bm = self.masked(&GETATTR_BITMAP);
        let access = if matches!(how, MacCreate::No) { 1 } else { 3 };
        let args = CompoundArgs::new()
            .putfh(dir)
            .op(op::SAVEFH, |_| {})
            .op(op::OPEN, |e| {
                e.u32(seqid);
                e.u32(access);
                e.u32(0);
                e.u64(clientid);
                e.opaque(&MAC_UID.to_be_bytes());
                match how {
                    MacCreate::No => e.u32(0),
                    MacCreate::Unchecked(mode) => {
                        e.u32(1);
                        e.u32(0);
                        Bitmap::of(&[attr::MODE]).encode(e);
                        e.u32(4);
                        e.u32(mode);
                    }
                    MacCreate::Exclusive(v) => {
                        e.u32(1);
                        e.u32(2);
                        e.fixed(&v);
                    }
                }
                e.u32(0); // CLAIM_NULL
                e.string(name);
            })
            .getattr(&obj_bm)
            .op(op::RESTOREFH, |_| {})
            .getattr(&dir_bm);
        let res = self.call(if access == 3 { "create" } else { "open" }, args);
        // nfs_owner_seqid_increment: not after these errors.
        match &res {
            Err((_, s)) if [10023, 10024, 10025, 10026, 10036, 10018, 10020, 10019].contains(s) => {
            }
            _ => self.seqid = self.seqid.wrapping_add(1),
        }
        let body = res.map_err(|(_, s)| s)?;
        let mut d = Decoder::new(&body);
        skip_op(&mut d, op::PUTFH);
        skip_op(&mut d, op::SAVEFH);
        skip_op(&mut d, op::OPEN);
        let mut stateid = (d.u32().unwrap(), d.array::<12>().unwrap());
        d.skip(4 + 16).unwrap();
        let rflags = d.u32().unwrap();
        let n = d.count(8, 4).unwrap();
        d.skip(4 * n).unwrap();
        assert_eq!(d.u32().unwrap(), 0, "no delegation expected");
        skip_op(&mut d, op::GETATTR);
        let attrs = parse_fattr(&mut d).unwrap();
        let fh = attrs.filehandle.clone().expect("OPEN without FILEHANDLE");
        if rflags & 2 != 0 {
            // OPEN4_RESULT_CONFIRM (nfs4_open_confirm_rpc).
            let seqid = self.seqid;
            let bm = self.masked(&GETATTR_BITMAP);
            let body = self
                .call(
                    "open_confirm",
                    CompoundArgs::new()
                        .putfh(&fh)
                        .op(op::OPEN_CONFIRM, |e| {
                            e.u32(stateid.0);
                            e.fixed(&stateid.1);
                            e.u32(seqid);
                        })
                        .getattr(&bm),
                )
                .unwrap();
            self.seqid = self.seqid.wrapping_add(1);
            let mut d = Decoder::new(&body);
            skip_op(&mut d, op::PUTFH);
            skip_op(&mut d, op::OPEN_CONFIRM);
            stateid = (d.u32().unwrap(), d.array::<12>().unwrap());
        }
        Ok(MacOpen { fh, stateid, attrs })
    }

    /// CLOSE (nfs4_close_rpc): PUTFH, CLOSE, GETATTR.
    fn close(&mut self, f: &MacOpen) {
        let seqid = self.seqid;
        let bm = self.masked(&GETATTR_BITMAP);
        self.call(
            "close",
            CompoundArgs::new()
                .putfh(&f.fh)
                .op(op::CLOSE, |e| {
                    e.u32(seqid);
                    e.u32(f.stateid.0);
                    e.fixed(&f.stateid.1);
                })
                .getattr(&bm),
        )
        .unwrap();
        self.seqid = self.seqid.wrapping_add(1);
    }

    /// SETATTR (nfs4_setattr_rpc, nfs_vattr_set_bitmap): what copyfile /
    /// Finder set on a copy — mode, access and modify times set to the
    /// client's, the backup and creation times — masked by
    /// supported_attrs. Owner and group equal to the cached ones are
    /// dropped by the kext before sending (the export shows the caller's).
    /// The stateid is all zeros unless the size changes.
    fn setattr_like_a_copy(&mut self, fh: &[u8], created: i64, modified: i64) -> Reply {
        let wanted = [
            attr::MODE,
            48, // time_access_set
            49, // time_backup
            attr::TIME_CREATE,
            54, // time_modify_set
        ];
        let sent = self.masked(&wanted);
        let mut v = Encoder::new();
        for a in &sent {
            match *a {
                attr::MODE => v.u32(0o644),
                48 | 54 => {
                    v.u32(1);
                    v.i64(modified);
                    v.u32(0);
                }
                49 | attr::TIME_CREATE => {
                    v.i64(created);
                    v.u32(500);
                }
                _ => unreachable!(),
            }
        }
        let bm = self.masked(&GETATTR_BITMAP);
        let set = Bitmap::of(&sent);
        self.call(
            "setattr",
            CompoundArgs::new()
                .putfh(fh)
                .op(op::SETATTR, |e| {
                    e.fixed(&[0u8; 16]);
                    set.encode(e);
                    e.opaque(&v.buf);
                })
                .getattr(&bm),
        )
    }
}

#[derive(Clone, Copy)]
enum MacCreate {
    No,
    Unchecked(u32),
    Exclusive([u8; 8]),
}

struct MacOpen {
    fh: Vec<u8>,
    stateid: (u32, [u8; 12]),
    attrs: MacAttrs,
}

/// The result array of a COMPOUND4res, or the failing op's (index, status).
fn compound_result(body: &[u8]) -> Reply {
    let mut d = Decoder::new(body);
    let status = d.u32().unwrap();
    d.opaque(1024).unwrap();
    let n = d.u32().unwrap() as usize;
    let rest = d.rest().to_vec();
    if status != 0 {
        return Err((n.saturating_sub(1), status));
    }
    Ok(rest)
}

fn skip_op(d: &mut Decoder<'_>, opnum: u32) {
    assert_eq!(d.u32().unwrap(), opnum, "result order");
    assert_eq!(d.u32().unwrap(), 0, "op {opnum} failed");
}

/// Mount, then walk the whole generated tree as Finder does with
/// readdirplus: every entry's attributes must pass the kext's parser,
/// fileids must be unique, and the count must equal the catalog's.
#[test]
fn finder_walks_the_whole_tree_and_every_reply_parses() {
    // A mode with its file-type bits, as `stat` prints it: never sent so.
    let srv = InProcess::start_generated(|cfg| cfg.export.file_mode = 0o100_644);
    let mut mac = Mac::mount(srv.addr);
    assert!(mac.supported.contains(attr::TIME_CREATE));
    let root = mac.root.clone();
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    let mut count = 0u64;
    while let Some(dir) = stack.pop() {
        for (name, a) in mac.readdir(&dir) {
            count += 1;
            assert!(seen.insert(a.fileid.unwrap()), "{name}: duplicate fileid");
            // Owners as the Mac's user sees them (export.owner = "caller").
            assert_eq!(a.owner.as_deref(), Some("501"), "{name}");
            assert_eq!(a.group.as_deref(), Some("20"), "{name}");
            if a.kind == Some(1) {
                assert_eq!(a.mode, Some(0o644), "{name}");
            }
            if a.kind == Some(2) {
                stack.push(a.filehandle.unwrap());
            }
        }
    }
    assert_eq!(count, srv.nfs.catalog().count().unwrap());
}

/// A label longer than a name may be, and a text node id too long for a
/// file handle, as the MarkBase app may write them: both must list, open
/// and read like any other (before: the id made the whole READDIR fail
/// with SERVERFAULT, and the label answered NAMETOOLONG to every LOOKUP).
#[test]
fn overlong_labels_and_ids_list_open_and_read() {
    let long_label = format!("{} Final Cut.mov", "Scène très longue ".repeat(20));
    assert!(long_label.len() > 255);
    let long_id = format!("com.markbase.node:{}", "0123456789abcdef".repeat(10));
    let srv = InProcess::start_with(|cfg| {
        let storage = cfg.storage_dir();
        markbase_nfs::catalog::create_demo(&cfg.export.db, &storage).unwrap();
        let content = storage.join("long.bin");
        std::fs::write(&content, b"long id content").unwrap();
        let c = rusqlite::Connection::open(&cfg.export.db).unwrap();
        let aliases = serde_json::json!({ "path": content }).to_string();
        c.execute(
            "INSERT INTO file_nodes (node_id, parent_id, label, node_type, aliases_json, file_size, created_at, updated_at)
             VALUES (?1, 'demo-library', ?2, 'file', ?3, 15, 1700000000, 1700000000),
                    ('short-id', 'demo-library', ?4, 'file', ?3, 15, 1700000000, 1700000000)",
            rusqlite::params![long_id, "clip.mov", aliases, long_label],
        )
        .unwrap();
    });
    let mut mac = Mac::mount(srv.addr);
    let root = mac.root.clone();
    let (lib, _) = mac.lookup(&root, "Library").unwrap();
    let entries = mac.readdir(&lib);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"clip.mov"), "{names:?}");
    let shortened = names
        .iter()
        .find(|n| n.starts_with("Scène très longue"))
        .expect("the long label is listed");
    assert!(shortened.len() <= 255);
    for name in ["clip.mov", shortened] {
        let (fh, a) = mac
            .lookup(&lib, name)
            .unwrap_or_else(|s| panic!("{name}: {s}"));
        assert!(fh.len() <= 128);
        assert_eq!(a.size, Some(15));
        let f = mac.open(&lib, name, MacCreate::No).unwrap();
        assert_eq!(read(&mut mac, &f, 0, 100), b"long id content");
        mac.close(&f);
    }
    // The handle of the long id still names the node after the server
    // forgets it (handles outlive the server's memory).
    let (fh, _) = mac.lookup(&lib, "clip.mov").unwrap();
    assert_eq!(mac.getattr(&fh).size, Some(15));
}

fn read(mac: &mut Mac, f: &MacOpen, offset: u64, count: u32) -> Vec<u8> {
    // nfs4_read_rpc_async: PUTFH, READ — no GETATTR.
    let body = mac
        .call(
            "read",
            CompoundArgs::new().putfh(&f.fh).op(op::READ, |e| {
                e.u32(f.stateid.0);
                e.fixed(&f.stateid.1);
                e.u64(offset);
                e.u32(count);
            }),
        )
        .unwrap();
    let mut d = Decoder::new(&body);
    skip_op(&mut d, op::PUTFH);
    skip_op(&mut d, op::READ);
    d.bool().unwrap();
    d.opaque(usize::MAX).unwrap().to_vec()
}

/// Finder's copy: create (UNCHECKED4 + MODE, then EXCLUSIVE4 + SETATTR as
/// `open(O_EXCL)` does), write, then copyfile's SETATTR of the times
/// including time_create and the original's modification time. Before, time_create was listed as supported but
/// refused with INVAL, and the whole `setattrlist` — the copy — failed.
#[test]
fn a_finder_copy_sets_creation_time_and_owner() {
    let srv = InProcess::start();
    let mut mac = Mac::mount(srv.addr);
    let root = mac.root.clone();
    let (dir, _) = mac.lookup(&root, "Projects").unwrap();
    let f = mac
        .open(&dir, "Copied Clip.mov", MacCreate::Unchecked(0o644))
        .unwrap();
    assert_eq!(f.attrs.owner.as_deref(), Some("501"));
    write(&mut mac, &f, 0, b"frame data", 2);
    let created = 1_600_000_000i64;
    let modified = 1_650_000_000i64;
    mac.setattr_like_a_copy(&f.fh, created, modified)
        .expect("copyfile's SETATTR");
    mac.close(&f);
    let a = mac.getattr(&f.fh);
    assert_eq!(a.time_create, Some((created, 500)));
    // The kext sends time_modify_set only if supported_attrs lists it;
    // without it the copy showed the time of the copy.
    assert_eq!(a.time_modify, Some((modified, 0)));
    assert_eq!(a.owner.as_deref(), Some("501"));
    // EXCLUSIVE4, then the SETATTR that gives the file its attributes.
    let g = mac
        .open(
            &dir,
            "Exclusive.mov",
            MacCreate::Exclusive(*b"\x7f\0\0\x01xid1"),
        )
        .unwrap();
    mac.setattr_like_a_copy(&g.fh, created + 7, modified)
        .expect("SETATTR after EXCLUSIVE4");
    mac.close(&g);
    assert_eq!(mac.getattr(&g.fh).time_create, Some((created + 7, 500)));
    // chflags hidden: ARCHIVE and HIDDEN go together, masked by what the
    // server supports (nfs_vattr_set_bitmap).
    assert_eq!(mac.getattr(&g.fh).hidden, Some(false));
    let flags = mac.masked(&[14, attr::HIDDEN]);
    assert_eq!(flags, [attr::HIDDEN]);
    let bm = Bitmap::of(&flags);
    mac.call(
        "setattr",
        CompoundArgs::new().putfh(&g.fh).op(op::SETATTR, |e| {
            e.fixed(&[0u8; 16]);
            bm.encode(e);
            e.opaque(&1u32.to_be_bytes());
        }),
    )
    .expect("chflags hidden");
    assert_eq!(mac.getattr(&g.fh).hidden, Some(true));
    // Kept in the server's own table across a restart: read it back there.
    srv.nfs.catalog().flush().unwrap();
    let db = rusqlite::Connection::open(srv.dir.path().join("users/demo.sqlite")).unwrap();
    let stored: i64 = db
        .query_row(
            "SELECT a.created_ns FROM markbase_nfs_attrs a JOIN file_nodes f ON f.node_id = a.node_id
             WHERE f.label = 'Copied Clip.mov'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, created * 1_000_000_000 + 500);
    // A name the server cannot resolve is BADOWNER, not a stored string.
    let mut v = Encoder::new();
    v.string("no-such-editor@markbase");
    let owner = Bitmap::of(&[attr::OWNER]);
    let err = mac
        .call(
            "setattr",
            CompoundArgs::new().putfh(&f.fh).op(op::SETATTR, |e| {
                e.fixed(&[0u8; 16]);
                owner.encode(e);
                e.opaque(&v.buf);
            }),
        )
        .unwrap_err();
    assert_eq!(err.1, Status::BadOwner.code());
}

/// WRITE (kext/nfs4_vnops.c: nfs4_write_rpc_async): PUTFH, WRITE,
/// GETATTR(write bitmap). Returns the committed level.
fn write(mac: &mut Mac, f: &MacOpen, offset: u64, data: &[u8], stable: u32) -> u32 {
    let body = mac
        .call("write", write_args(f, offset, data, stable))
        .unwrap();
    let mut d = Decoder::new(&body);
    skip_op(&mut d, op::PUTFH);
    skip_op(&mut d, op::WRITE);
    assert_eq!(d.u32().unwrap() as usize, data.len());
    let committed = d.u32().unwrap();
    d.skip(8).unwrap();
    skip_op(&mut d, op::GETATTR);
    parse_fattr(&mut d).unwrap();
    committed
}

fn write_args(f: &MacOpen, offset: u64, data: &[u8], stable: u32) -> CompoundArgs {
    CompoundArgs::new()
        .putfh(&f.fh)
        .op(op::WRITE, |e| {
            e.u32(f.stateid.0);
            e.fixed(&f.stateid.1);
            e.u64(offset);
            e.u32(stable);
            e.opaque(data);
        })
        .getattr(&WRITE_BITMAP)
}

/// Mac apps send decomposed (NFD) names; the app stored the label
/// composed. The kext passes names through as given (nfsm_chain_add_name,
/// kext/nfsm_subs.h, without the `nfc` option). Before: NOENT, and a create
/// added a second, identical-looking entry. And the Mac's own volumes
/// ignore case: so does the export by default.
#[test]
fn decomposed_and_differently_cased_names_find_the_stored_label() {
    let srv = InProcess::start();
    let mut mac = Mac::mount(srv.addr);
    let root = mac.root.clone();
    let (lib, _) = mac.lookup(&root, "Library").unwrap();
    let nfc = "Notes caf\u{e9}.txt";
    let nfd = "Notes cafe\u{301}.txt";
    let (by_nfc, _) = mac.lookup(&lib, nfc).unwrap();
    let (by_nfd, _) = mac.lookup(&lib, nfd).expect("NFD LOOKUP");
    assert_eq!(by_nfc, by_nfd);
    let (by_case, _) = mac.lookup(&lib, "NOTES CAFE\u{301}.TXT").expect("case");
    assert_eq!(by_case, by_nfc);
    // OPEN-create of the NFD name opens the existing file.
    let f = mac.open(&lib, nfd, MacCreate::Unchecked(0o644)).unwrap();
    assert_eq!(f.fh, by_nfc);
    mac.close(&f);
    // mkdir of another spelling of an existing folder: EXIST.
    let mkdir = |mac: &mut Mac, name: &str| {
        let bm = mac.masked(&GETATTR_BITMAP);
        let mut obj = bm.clone();
        obj.push(attr::FILEHANDLE);
        obj.sort();
        mac.call(
            "mkdir",
            // nfs4_create_rpc: PUTFH, SAVEFH, CREATE, GETATTR(+FILEHANDLE),
            // RESTOREFH, GETATTR(dir).
            CompoundArgs::new()
                .putfh(&root)
                .op(op::SAVEFH, |_| {})
                .op(op::CREATE, |e| {
                    e.u32(2);
                    e.string(name);
                    Bitmap::of(&[attr::MODE]).encode(e);
                    e.u32(4);
                    e.u32(0o755);
                })
                .getattr(&obj)
                .op(op::RESTOREFH, |_| {})
                .getattr(&bm),
        )
    };
    mkdir(&mut mac, "Re\u{301}sume\u{301}s").unwrap();
    assert_eq!(
        mkdir(&mut mac, "R\u{e9}sum\u{e9}s").unwrap_err().1,
        Status::Exist.code()
    );
    assert_eq!(
        mkdir(&mut mac, "r\u{c9}SUM\u{c9}S").unwrap_err().1,
        Status::Exist.code()
    );
    let names: Vec<String> = mac.readdir(&root).into_iter().map(|(n, _)| n).collect();
    // Shown as stored: the form the Mac created it with.
    assert_eq!(
        names
            .iter()
            .filter(|n| n.to_lowercase().starts_with("re"))
            .count(),
        1,
        "{names:?}"
    );
    assert!(names.contains(&"Re\u{301}sume\u{301}s".to_string()));
    // A rename that only changes case relabels the node.
    let (old, _) = mac.lookup(&lib, nfc).unwrap();
    rename(&mut mac, &lib, nfd, &lib, "NOTES caf\u{e9}.txt").unwrap();
    let names: Vec<String> = mac.readdir(&lib).into_iter().map(|(n, _)| n).collect();
    assert!(
        names.contains(&"NOTES caf\u{e9}.txt".to_string()),
        "{names:?}"
    );
    assert_eq!(mac.lookup(&lib, nfc).unwrap().0, old);
    // REMOVE by the NFD spelling removes it.
    remove(&mut mac, &lib, "notes cafe\u{301}.txt").unwrap();
    assert_eq!(mac.lookup(&lib, nfc).unwrap_err(), Status::NoEnt.code());
    let bm = [attr::CASE_INSENSITIVE];
    let body = mac
        .call("pathconf", CompoundArgs::new().putfh(&root).getattr(&bm))
        .unwrap();
    let mut d = Decoder::new(&body);
    skip_op(&mut d, op::PUTFH);
    skip_op(&mut d, op::GETATTR);
    assert_eq!(parse_fattr(&mut d).unwrap().case_insensitive, Some(true));

    // A case-sensitive export: another normalisation is the same name,
    // another case is not.
    let srv = InProcess::start_with(|cfg| cfg.export.case_insensitive = false);
    let mut mac = Mac::mount(srv.addr);
    let root = mac.root.clone();
    let (lib, _) = mac.lookup(&root, "Library").unwrap();
    let (by_nfc, _) = mac.lookup(&lib, nfc).unwrap();
    assert_eq!(mac.lookup(&lib, nfd).expect("NFD LOOKUP").0, by_nfc);
    assert_eq!(
        mac.lookup(&lib, "NOTES CAFE\u{301}.TXT").unwrap_err(),
        Status::NoEnt.code()
    );
}

/// RENAME (nfs4_rename_rpc): PUTFH(from), SAVEFH, PUTFH(to), RENAME,
/// GETATTR(to), RESTOREFH, GETATTR(from).
fn rename(mac: &mut Mac, from: &[u8], old: &str, to: &[u8], new: &str) -> Result<(), u32> {
    let bm = mac.masked(&GETATTR_BITMAP);
    mac.call(
        "rename",
        CompoundArgs::new()
            .putfh(from)
            .op(op::SAVEFH, |_| {})
            .putfh(to)
            .op(op::RENAME, |e| {
                e.string(old);
                e.string(new);
            })
            .getattr(&bm)
            .op(op::RESTOREFH, |_| {})
            .getattr(&bm),
    )
    .map(|_| ())
    .map_err(|(_, s)| s)
}

/// REMOVE (nfs4_remove_rpc): PUTFH(dir), REMOVE, GETATTR(dir).
fn remove(mac: &mut Mac, dir: &[u8], name: &str) -> Result<(), u32> {
    let bm = mac.masked(&GETATTR_BITMAP);
    mac.call(
        "remove",
        CompoundArgs::new()
            .putfh(dir)
            .op(op::REMOVE, |e| e.string(name))
            .getattr(&bm),
    )
    .map(|_| ())
    .map_err(|(_, s)| s)
}

/// What `nfs_vnop_access` (kext/nfs_vnops.c) concludes for the rights in
/// `wanted`: with the access cache on (the default) it asks every right
/// (NFS_ACCESS_ALL, 0x3f) through `nfs4_access_rpc` (kext/nfs4_vnops.c:
/// PUTFH, ACCESS, GETATTR), which takes a DELETE the server does not
/// report as supported for allowed; then EACCES unless all of `wanted`
/// came back.
fn access_allows(mac: &mut Mac, fh: &[u8], wanted: u32) -> bool {
    const NFS_ACCESS_ALL: u32 = 0x3f;
    const NFS_ACCESS_DELETE: u32 = 0x10;
    let bm = mac.masked(&GETATTR_BITMAP);
    let body = mac
        .call(
            "access",
            CompoundArgs::new()
                .putfh(fh)
                .op(op::ACCESS, |e| e.u32(NFS_ACCESS_ALL))
                .getattr(&bm),
        )
        .unwrap();
    let mut d = Decoder::new(&body);
    skip_op(&mut d, op::PUTFH);
    assert_eq!((d.u32().unwrap(), d.u32().unwrap()), (op::ACCESS, 0));
    let supported = d.u32().unwrap();
    let mut result = d.u32().unwrap();
    let missing = NFS_ACCESS_ALL & !supported;
    if missing & NFS_ACCESS_DELETE != 0 {
        result |= NFS_ACCESS_DELETE;
    }
    result & wanted == wanted
}

/// `rm` and Finder's delete of a file: the VFS authorises KAUTH_VNODE_DELETE
/// on the file itself, which the kext turns into NFS_ACCESS_DELETE asked
/// of the file (nfs_vnop_access, "common"). A server that reports DELETE as
/// supported for a file and does not grant it makes every delete EACCES.
#[test]
fn deleting_a_file_is_allowed_by_access() {
    let srv = InProcess::start();
    let mut mac = Mac::mount(srv.addr);
    let root = mac.root.clone();
    let (dir, _) = mac.lookup(&root, "Projects").unwrap();
    let (file, _) = mac.lookup(&dir, "README.txt").unwrap();
    const READ: u32 = 0x01;
    const MODIFY: u32 = 0x04;
    const DELETE: u32 = 0x10;
    assert!(access_allows(&mut mac, &file, DELETE), "delete of a file");
    assert!(access_allows(&mut mac, &file, READ | MODIFY));
    // Deleting an entry of the folder (KAUTH_VNODE_DELETE_CHILD: MODIFY).
    assert!(access_allows(&mut mac, &dir, MODIFY | DELETE));
    remove(&mut mac, &dir, "README.txt").unwrap();
}

/// A whole-file lock with the kext's 20-byte lock owner
/// (kext/nfs4_vnops.c: nfs4_setlock_rpc; nfsm_chain_add_lock_owner4):
/// PUTFH, GETATTR, LOCK(0, all ones). Then, with the file open and locked,
/// Finder's delete of an open file is a silly rename
/// (kext/nfs_vnops.c: nfs_sillyrename, ".nfs.%08x.%04x"): the open keeps
/// working under the new name until CLOSE, then the name is removed.
#[test]
fn whole_file_lock_and_silly_rename_of_an_open_file() {
    let srv = InProcess::start();
    let mut mac = Mac::mount(srv.addr);
    let root = mac.root.clone();
    let f = mac
        .open(&root, "Project.fcpbundle.lock", MacCreate::Unchecked(0o644))
        .unwrap();
    let mut owner = 7u32.to_ne_bytes().to_vec(); // nlo_name
    owner.extend(4242u32.to_ne_bytes()); // nlo_pid
    owner.extend(1_700_000_000u64.to_ne_bytes()); // pid start, seconds
    owner.extend(123_456u32.to_ne_bytes()); // and microseconds
    assert_eq!(owner.len(), 20);
    let (seqid, clientid) = (mac.seqid, mac.clientid);
    let bm = mac.masked(&GETATTR_BITMAP);
    let body = mac
        .call(
            "lock",
            CompoundArgs::new()
                .putfh(&f.fh)
                .getattr(&bm)
                .op(op::LOCK, |e| {
                    e.u32(2); // WRITE_LT
                    e.bool(false);
                    e.u64(0);
                    e.u64(u64::MAX);
                    e.bool(true);
                    e.u32(seqid);
                    e.u32(f.stateid.0);
                    e.fixed(&f.stateid.1);
                    e.u32(0); // nlo_seqid starts at 0
                    e.u64(clientid);
                    e.opaque(&owner);
                }),
        )
        .expect("whole-file LOCK");
    mac.seqid += 1;
    let mut d = Decoder::new(&body);
    skip_op(&mut d, op::PUTFH);
    skip_op(&mut d, op::GETATTR);
    parse_fattr(&mut d).unwrap();
    skip_op(&mut d, op::LOCK);
    let lock_sid = (d.u32().unwrap(), d.array::<12>().unwrap());
    // WRITE with the lock stateid, as nfs_get_stateid picks it.
    let locked = MacOpen {
        fh: f.fh.clone(),
        stateid: lock_sid,
        attrs: MacAttrs::default(),
    };
    write(&mut mac, &locked, 0, b"locked bytes", 2);
    // Silly rename, then I/O through the open.
    let silly = format!(".nfs.{:08x}.{:04x}", 42, 4242 & 0xffff);
    assert_eq!(mac.lookup(&root, &silly).unwrap_err(), Status::NoEnt.code());
    rename(&mut mac, &root, "Project.fcpbundle.lock", &root, &silly).unwrap();
    write(&mut mac, &locked, 12, b" more", 2);
    assert_eq!(read(&mut mac, &f, 0, 64), b"locked bytes more");
    mac.close(&f);
    remove(&mut mac, &root, &silly).unwrap();
    assert_eq!(mac.lookup(&root, &silly).unwrap_err(), Status::NoEnt.code());
}

/// 128 WRITEs of 1 MiB in flight on one connection, the Mac's most
/// (nfs_max_async_writes, kext/nfs_bio.c), held on the file so none can
/// finish, and a GETATTR sent behind them: it must be read, run and
/// answered while all 128 wait (before, the connection admitted 64 calls
/// and read nothing more until WRITEs finished). Then the WRITEs land.
/// Then F_NOCACHE's partial-page blocks go FILE_SYNC (kext/nfs_vnops.c:
/// nfs_vnop_write): answered as FILE_SYNC.
#[test]
fn a_128_deep_write_stream_leaves_room_for_metadata() {
    // Spliced payloads run in a lane per file; copied ones (macOS servers,
    // or splicing off) each take a thread of the blocking pool, which 128
    // held WRITEs fill: the GETATTR must run elsewhere.
    deep_write_stream_leaves_room_for_metadata(true);
    deep_write_stream_leaves_room_for_metadata(false);
}

fn deep_write_stream_leaves_room_for_metadata(splice: bool) {
    // Buffered WRITEs, so every one of them waits for the file's turn.
    let srv = InProcess::start_with(|cfg| {
        cfg.storage.direct_writes = false;
        cfg.network.splice_writes = splice;
    });
    let mut mac = Mac::mount(srv.addr);
    let root = mac.root.clone();
    let f = mac
        .open(&root, "Render.mov", MacCreate::Unchecked(0o644))
        .unwrap();
    let node = srv
        .nfs
        .catalog()
        .lookup(&markbase_nfs::catalog::NodeId::Root, "Render.mov")
        .unwrap()
        .unwrap();
    let path = node.meta().content.clone().unwrap();
    let pooled = srv.nfs.files().get_writable(node.fileid, &path).unwrap();
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    const DEPTH: u64 = 128;
    mac.rpc
        .stream()
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let held = pooled.hold_writes();
    let mut xids = HashSet::new();
    for i in 0..DEPTH {
        let args = write_args(&f, i << 20, &chunk, 0).encode("write", 0);
        xids.insert(mac.rpc.send_call(NFS4_PROGRAM, 4, 1, &args).unwrap());
    }
    let bm = mac.masked(&GETATTR_BITMAP);
    let args = CompoundArgs::new()
        .putfh(&root)
        .getattr(&bm)
        .encode("getattr", 0);
    let getattr_xid = mac.rpc.send_call(NFS4_PROGRAM, 4, 1, &args).unwrap();
    let rec = mac
        .rpc
        .read_record()
        .expect("no reply while 128 WRITEs wait: the GETATTR was not read")
        .expect("reply");
    let (xid, st, at) = decode_reply(&rec).unwrap();
    assert_eq!(st, ReplyStatus::Success);
    assert_eq!(xid, getattr_xid, "a WRITE finished while the file was held");
    let body = compound_result(&rec[at..]).unwrap();
    let mut d = Decoder::new(&body);
    skip_op(&mut d, op::PUTFH);
    skip_op(&mut d, op::GETATTR);
    parse_fattr(&mut d).unwrap();
    drop(held);
    for _ in 0..DEPTH {
        let rec = mac.rpc.read_record().unwrap().expect("reply");
        let (xid, st, at) = decode_reply(&rec).unwrap();
        assert_eq!(st, ReplyStatus::Success);
        assert!(xids.remove(&xid));
        compound_result(&rec[at..]).expect("WRITE failed");
    }
    // F_NOCACHE, cache off: a frame's partial 16 KiB pages go FILE_SYNC —
    // a small edge, and a large one (kept out of the splice path, so it
    // can be written with a sync of its own range).
    let head = vec![0xeeu8; 16384 - 512];
    assert_eq!(write(&mut mac, &f, (DEPTH << 20) + 512, &head, 2), 2);
    let edge: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    assert_eq!(write(&mut mac, &f, (DEPTH << 20) + 16384, &edge, 2), 2);
    mac.close(&f);
    let end = (DEPTH << 20) as usize + 16384 + edge.len();
    assert_eq!(node.size(), end as u64);
    let data = std::fs::read(path).unwrap();
    assert_eq!(&data[(5 << 20)..(6 << 20)], &chunk[..]);
    assert_eq!(
        &data[(DEPTH << 20) as usize + 512..][..head.len()],
        &head[..]
    );
    assert_eq!(&data[end - edge.len()..], &edge[..]);
}

/// The mount as `mount_nfs` sees the export's limits: maxread/maxwrite of
/// 1 MiB (the kext lowers rsize/wsize to them) and the Mac's client id
/// accepted with no machine name in it.
#[test]
fn the_mount_shapes_are_accepted_and_the_limits_fit_the_mac() {
    let srv = InProcess::start();
    let mut mac = Mac::mount(srv.addr);
    let root = mac.root.clone();
    let body = mac
        .call(
            "statfs",
            CompoundArgs::new().putfh(&root).getattr(&[30, 31]),
        )
        .unwrap();
    let mut d = Decoder::new(&body);
    skip_op(&mut d, op::PUTFH);
    skip_op(&mut d, op::GETATTR);
    Bitmap::decode(&mut d).unwrap();
    d.u32().unwrap();
    assert_eq!(d.u64().unwrap(), 1 << 20);
    assert_eq!(d.u64().unwrap(), 1 << 20);
    // A Linux client beside the Mac is a client of its own.
    let linux = Nfs4Client::connect(srv.addr, "linux-beside").unwrap();
    assert_ne!(linux.clientid, mac.clientid);
}

/// A Mac that sleeps longer than the lease: the RENEW timer
/// (kext/nfs4_subs.c: nfs4_renew_timer, every lease/2) stops, and on
/// waking nfs_connect_setup sends RENEW first. Before, the server had
/// dropped the client: RENEW answered EXPIRED, the CLAIM_PREVIOUS reopen
/// got NO_GRACE (kext/nfs4_vnops.c: nfs4_reopen / nfs_recover) and every
/// file that held a lock was marked lost (EIO). Now the sleeper's RENEW,
/// open and lock still work; a second client that wants the locked range
/// while the Mac sleeps gets it, and only that lock goes.
#[test]
fn a_mac_that_slept_past_the_lease_finds_its_files_as_it_left_them() {
    let srv = InProcess::start_with(|cfg| cfg.nfs.lease_time = 1);
    let mut mac = Mac::mount(srv.addr);
    let root = mac.root.clone();
    let f = mac
        .open(&root, "Timeline.fcpxml", MacCreate::Unchecked(0o644))
        .unwrap();
    let lock = |mac: &mut Mac, f: &MacOpen, offset: u64, len: u64, owner: &[u8]| {
        let (seqid, clientid) = (mac.seqid, mac.clientid);
        let body = mac.call(
            "lock",
            CompoundArgs::new().putfh(&f.fh).op(op::LOCK, |e| {
                e.u32(2);
                e.bool(false);
                e.u64(offset);
                e.u64(len);
                e.bool(true);
                e.u32(seqid);
                e.u32(f.stateid.0);
                e.fixed(&f.stateid.1);
                e.u32(0);
                e.u64(clientid);
                e.opaque(owner);
            }),
        );
        mac.seqid += 1;
        body.map(|b| {
            let mut d = Decoder::new(&b);
            skip_op(&mut d, op::PUTFH);
            skip_op(&mut d, op::LOCK);
            MacOpen {
                fh: f.fh.clone(),
                stateid: (d.u32().unwrap(), d.array::<12>().unwrap()),
                attrs: MacAttrs::default(),
            }
        })
    };
    let whole = lock(&mut mac, &f, 0, 100, &[1u8; 20]).expect("lock 0-100");
    let tail = lock(&mut mac, &f, 1000, 100, &[2u8; 20]).expect("lock 1000-1100");
    // Asleep for several leases, while another client keeps the server
    // busy (its calls sweep expired leases).
    let mut other = Nfs4Client::connect(srv.addr, "linux-workstation").unwrap();
    let renew = |c: &mut Nfs4Client| {
        let id = c.clientid;
        c.compound(&CompoundArgs::new().op(op::RENEW, |e| e.u64(id)))
    };
    for _ in 0..8 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        renew(&mut other).unwrap();
    }
    // The other client wants bytes 0-10: the sleeper's lock gives way.
    let rootfh = other.lookup("").unwrap();
    let g = other
        .open(
            &rootfh,
            "Timeline.fcpxml",
            markbase_nfs::tools::client::Create::No,
            3,
        )
        .unwrap();
    other
        .lock(&g, None, 0, 2, 0, 10, b"linux-lock-owner")
        .expect("the sleeper's conflicting lock gives way");
    // The Mac wakes: RENEW, then I/O through its open and its other lock.
    let clientid = mac.clientid;
    mac.call(
        "renew",
        CompoundArgs::new().op(op::RENEW, |e| e.u64(clientid)),
    )
    .expect("RENEW after sleep");
    assert_eq!(write(&mut mac, &tail, 1000, b"after sleep", 2), 2);
    assert_eq!(read(&mut mac, &f, 1000, 11), b"after sleep");
    // Only the conflicting lock went.
    let err = mac
        .call("write", write_args(&whole, 0, b"x", 2))
        .unwrap_err();
    assert_eq!(err.1, Status::BadStateId.code());
    mac.close(&f);
}

/// `ln -s` and `mkfifo` on the Mac: CREATE as `nfs4_create_rpc`
/// (kext/nfs4_vnops.c) sends it — PUTFH(dir), SAVEFH, CREATE with the
/// mode in its fattr4, GETATTR(getattr bitmap + FILEHANDLE), RESTOREFH,
/// GETATTR(dir) — then `nfs4_readlink_rpc`'s PUTFH, GETATTR, READLINK; the
/// kext fails a create whose GETATTR has no FILEHANDLE ("didn't return
/// filehandle?") and parses every reply strictly.
#[test]
fn symlinks_and_fifos_as_the_kext_creates_them() {
    let srv = InProcess::start();
    let mut mac = Mac::mount(srv.addr);
    let (dir, _) = mac.lookup(&mac.root.clone(), "Projects").unwrap();
    let create = |mac: &mut Mac, tag: &str, objtype: u32, target: &str, name: &str| {
        let mut with_fh: Vec<u32> = mac.masked(&GETATTR_BITMAP);
        with_fh.push(attr::FILEHANDLE);
        with_fh.sort();
        let bm = mac.masked(&GETATTR_BITMAP);
        let mode = Bitmap::of(&mac.masked(&[attr::MODE]));
        let args = CompoundArgs::new()
            .putfh(&dir)
            .op(op::SAVEFH, |_| {})
            .op(op::CREATE, |e| {
                e.u32(objtype);
                if objtype == 5 {
                    e.string(target);
                }
                e.string(name);
                mode.encode(e);
                e.u32(4);
                e.u32(0o755);
            })
            .getattr(&with_fh)
            .op(op::RESTOREFH, |_| {})
            .getattr(&bm);
        let body = mac.call(tag, args).expect(tag);
        let mut d = Decoder::new(&body);
        skip_op(&mut d, op::PUTFH);
        skip_op(&mut d, op::SAVEFH);
        skip_op(&mut d, op::CREATE);
        d.fixed(4 + 8 + 8).unwrap();
        Bitmap::decode(&mut d).unwrap();
        skip_op(&mut d, op::GETATTR);
        let made = parse_fattr(&mut d).unwrap();
        skip_op(&mut d, op::RESTOREFH);
        skip_op(&mut d, op::GETATTR);
        let folder = parse_fattr(&mut d).unwrap();
        assert_eq!(folder.kind, Some(2));
        made
    };
    let link = create(&mut mac, "symlink", 5, "../Library/Notes café.txt", "notes");
    assert_eq!((link.kind, link.mode), (Some(5), Some(0o755)));
    assert_eq!(link.size, Some("../Library/Notes café.txt".len() as u64));
    let fh = link
        .filehandle
        .expect("create/symlink didn't return filehandle?");
    let bm = mac.masked(&GETATTR_BITMAP);
    let body = mac
        .call(
            "readlink",
            CompoundArgs::new()
                .putfh(&fh)
                .getattr(&bm)
                .op(op::READLINK, |_| {}),
        )
        .unwrap();
    let mut d = Decoder::new(&body);
    skip_op(&mut d, op::PUTFH);
    skip_op(&mut d, op::GETATTR);
    parse_fattr(&mut d).unwrap();
    skip_op(&mut d, op::READLINK);
    assert_eq!(
        d.opaque(4096).unwrap(),
        "../Library/Notes café.txt".as_bytes()
    );

    let fifo = create(&mut mac, "mknod", 7, "", "render.pipe");
    assert_eq!(fifo.kind, Some(7));
    assert!(fifo.filehandle.is_some());
    // Finder lists both, each entry parsed as strictly.
    let listed: Vec<(String, Option<u32>)> = mac
        .readdir(&dir)
        .into_iter()
        .map(|(n, a)| (n, a.kind))
        .collect();
    assert!(listed.contains(&("notes".into(), Some(5))), "{listed:?}");
    assert!(
        listed.contains(&("render.pipe".into(), Some(7))),
        "{listed:?}"
    );
}

/// A studio server with two users' catalogs (`[[export]]`): the Mac mounts
/// `server:/warren` with the walk `nfs4_mount` makes and browses it, and
/// `server:/` shows the exports as folders whose fsid differs from the
/// volume's, which the kext mirror-mounts (kext/nfs_vfsops.c:
/// nfs_mirror_mount_domount) by walking the same path again.
#[test]
fn a_mac_mounts_one_export_of_several_and_sees_the_pseudo_root_at_slash() {
    use markbase_nfs::config::{ExportConfig, ExportTables};
    let srv = InProcess::start_with(|cfg| {
        let users = cfg.export.db.parent().unwrap().to_path_buf();
        let export = |name: &str, id: u32| ExportConfig {
            path: format!("/{name}"),
            db: users.join(format!("{name}.sqlite")),
            export_id: id,
            ..ExportConfig::default()
        };
        cfg.export =
            ExportTables::several(vec![export("warren", 1), export("accusys", 2)]).unwrap();
    });
    let mut mac = Mac::mount_path(srv.addr, "/warren").expect("mount /warren");
    let root = mac.root.clone();
    let mut names: Vec<String> = mac.readdir(&root).into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, ["Library", "Projects"]);
    let (projects, _) = mac.lookup(&root, "Projects").unwrap();
    assert!(mac.lookup(&projects, "README.txt").is_ok());
    // A path in no export: the mount fails with the LOOKUP's NOENT.
    let e = Mac::mount_path(srv.addr, "/nobody").err().unwrap();
    assert!(e.contains("answered 2"), "{e}");

    // server:/ is the pseudo-root: every attribute parses as the kext
    // reads it, and its entries are the exports, each its own file system.
    let mut mac = Mac::mount(srv.addr);
    let pseudo = mac.root.clone();
    let top = mac.getattr(&pseudo);
    let entries = mac.readdir(&pseudo);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["warren", "accusys"]);
    for (name, a) in &entries {
        assert_eq!(a.kind, Some(2), "{name}");
        assert_ne!(a.mounted_on_fileid, top.fileid, "{name}");
    }
    // Two catalogs' roots, two file ids (the kext's inode numbers).
    assert_ne!(
        entries[0].1.mounted_on_fileid,
        entries[1].1.mounted_on_fileid
    );
    let (warren, a) = mac.lookup(&pseudo, "warren").unwrap();
    assert_eq!(warren, root, "the walk and the pseudo-root agree");
    assert_eq!(a.kind, Some(2));
    // Nothing is made in the pseudo-root (Finder shows it read-only).
    let made = mac.open(&pseudo, "Untitled.txt", MacCreate::Unchecked(0o644));
    assert_eq!(made.err(), Some(30), "NFS4ERR_ROFS");
}
