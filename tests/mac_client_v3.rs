//! The server as Apple's NFSv3 client drives it: Finder's "Connect to
//! Server" (`nfs://`) and `mount_nfs` without `vers=4`. macOS cannot run
//! here, so this client replays the calls the kext sends — each shape names
//! the Apple source it mirrors (apple-oss-distributions/NFS, `kext/…`) —
//! and reads every reply as strictly as the kext does: a short reply is
//! EBADRPC, a file type outside 1..=7 is a vnode type change (ESTALE), a
//! handle over 128 bytes is EBADRPC, and every status from 10001 up reaches
//! the application as EIO (`kext/nfs_subs.c: nfs_maperr`).

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;

use common::*;
use markbase_nfs::rpc::message::ReplyStatus;
use markbase_nfs::rpc::Credentials;
use markbase_nfs::tools::client::RpcClient;
use markbase_nfs::xdr::{Decoder, Encoder};

const NFS: u32 = 100_003;
const MOUNT: u32 = 100_005;

const GETATTR: u32 = 1;
const SETATTR: u32 = 2;
const LOOKUP: u32 = 3;
const ACCESS: u32 = 4;
const READ: u32 = 6;
const WRITE: u32 = 7;
const CREATE: u32 = 8;
const REMOVE: u32 = 12;
const RENAME: u32 = 14;
const LINK: u32 = 15;
const READDIRPLUS: u32 = 17;
const FSSTAT: u32 = 18;
const FSINFO: u32 = 19;
const PATHCONF: u32 = 20;
const COMMIT: u32 = 21;

const NFS3ERR_NOENT: u32 = 2;
const NFS3ERR_EXIST: u32 = 17;
const NFS3ERR_MLINK: u32 = 31;

const UNSTABLE: u32 = 0;
const FILE_SYNC: u32 = 2;

/// `NFS_ACCESS_ALL`: what `nfs3_access_rpc` always asks while access
/// caching is on (kext/nfs_vnops.c: nfs_vnop_access).
const ACCESS_ALL: u32 = 0x3f;
/// `NFS_READDIRSIZE` (xnu bsd/nfs/nfsproto.h): READDIRPLUS's dircount.
const READDIRSIZE: u32 = 32 * 1024;
/// The rwsize `serve` prints in its mount line.
const RWSIZE: u32 = 1024 * 1024;

/// The editor's uid and gid on the Mac (the first user account), and the
/// groups such a user is in (at most NFS_MAXGRPS = 16 are sent).
const MAC_UID: u32 = 501;
const MAC_GID: u32 = 20;
const MAC_GROUPS: [u32; 16] = [
    20, 12, 61, 79, 80, 81, 98, 33, 100, 204, 250, 395, 398, 399, 400, 701,
];

/// The attributes the kext loads from a fattr3 (kext/nfs_subs.c:
/// nfs_parsefattr).
#[derive(Debug, Clone, PartialEq)]
struct Fattr {
    kind: u32,
    mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    size: u64,
    fileid: u64,
    atime: (u32, u32),
    mtime: (u32, u32),
    ctime: (u32, u32),
}

fn time(d: &mut Decoder<'_>) -> Result<(u32, u32), String> {
    let t = (u32_of(d)?, u32_of(d)?);
    if t.1 >= 1_000_000_000 {
        return Err(format!("nanoseconds {} out of range", t.1));
    }
    Ok(t)
}

fn u32_of(d: &mut Decoder<'_>) -> Result<u32, String> {
    d.u32().map_err(|e| format!("short reply (EBADRPC): {e}"))
}

fn u64_of(d: &mut Decoder<'_>) -> Result<u64, String> {
    d.u64().map_err(|e| format!("short reply (EBADRPC): {e}"))
}

fn bool_of(d: &mut Decoder<'_>) -> Result<bool, String> {
    match u32_of(d)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(format!("boolean {v}")),
    }
}

/// A fattr3, failing where the kext would: a type it maps to VNON makes
/// `nfs_loadattrcache` answer ESTALE.
fn fattr(d: &mut Decoder<'_>) -> Result<Fattr, String> {
    let kind = u32_of(d)?;
    if !(1..=7).contains(&kind) {
        return Err(format!("file type {kind} (VNON: ESTALE)"));
    }
    let mode = u32_of(d)?;
    let nlink = u32_of(d)?;
    let uid = u32_of(d)?;
    let gid = u32_of(d)?;
    let size = u64_of(d)?;
    let _used = u64_of(d)?;
    let _rdev = (u32_of(d)?, u32_of(d)?);
    let _fsid = u64_of(d)?;
    let fileid = u64_of(d)?;
    Ok(Fattr {
        kind,
        mode,
        nlink,
        uid,
        gid,
        size,
        fileid,
        atime: time(d)?,
        mtime: time(d)?,
        ctime: time(d)?,
    })
}

fn post_op_attr(d: &mut Decoder<'_>) -> Result<Option<Fattr>, String> {
    if bool_of(d)? {
        Ok(Some(fattr(d)?))
    } else {
        Ok(None)
    }
}

/// wcc_attr: what a change found before it.
#[derive(Debug, Clone, Copy)]
struct WccAttr {
    _size: u64,
    mtime: (u32, u32),
    _ctime: (u32, u32),
}

/// wcc_data: the pre-op and post-op attributes.
#[derive(Debug)]
struct Wcc {
    before: Option<WccAttr>,
    after: Option<Fattr>,
}

fn wcc(d: &mut Decoder<'_>) -> Result<Wcc, String> {
    let before = if bool_of(d)? {
        Some(WccAttr {
            _size: u64_of(d)?,
            mtime: time(d)?,
            _ctime: time(d)?,
        })
    } else {
        None
    };
    Ok(Wcc {
        before,
        after: post_op_attr(d)?,
    })
}

/// A handle as `nfsm_chain_get_fh` takes it: over 128 bytes is EBADRPC.
fn handle(d: &mut Decoder<'_>) -> Result<Vec<u8>, String> {
    let fh = d
        .opaque(usize::MAX)
        .map_err(|e| format!("short reply (EBADRPC): {e}"))?;
    if fh.is_empty() || fh.len() > 128 {
        return Err(format!("handle of {} bytes (EBADRPC)", fh.len()));
    }
    Ok(fh.to_vec())
}

/// How a sattr3 time is set.
#[derive(Clone, Copy)]
enum SetTime {
    DontChange,
    Server,
    Client(u32, u32),
}

/// sattr3 as `nfsm_chain_add_v3sattr_f` (kext/nfs_subs.c) writes it.
#[derive(Clone, Copy)]
struct Sattr {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: SetTime,
    mtime: SetTime,
}

impl Default for Sattr {
    fn default() -> Self {
        Sattr {
            mode: None,
            uid: None,
            gid: None,
            size: None,
            atime: SetTime::DontChange,
            mtime: SetTime::DontChange,
        }
    }
}

impl Sattr {
    fn encode(&self, e: &mut Encoder) {
        for v in [self.mode, self.uid, self.gid] {
            e.bool(v.is_some());
            if let Some(v) = v {
                e.u32(v);
            }
        }
        e.bool(self.size.is_some());
        if let Some(s) = self.size {
            e.u64(s);
        }
        for t in [self.atime, self.mtime] {
            match t {
                SetTime::DontChange => e.u32(0),
                SetTime::Server => e.u32(1),
                SetTime::Client(s, n) => {
                    e.u32(2);
                    e.u32(s);
                    e.u32(n);
                }
            }
        }
    }
}

/// What the kext makes of FSINFO (kext/nfs_vfsops.c: nfs3_fsinfo).
#[derive(Debug)]
struct MountSizes {
    rsize: u32,
    wsize: u32,
    readdirsize: u32,
    maxfilesize: u64,
    properties: u32,
}

/// A Mac that mounted the server over NFSv3.
struct MacV3 {
    rpc: RpcClient,
    root: Vec<u8>,
    sizes: MountSizes,
    name_max: u32,
}

fn mac_credentials() -> Credentials {
    // nfsm_rpchead2 (kext/nfs_subs.c): stamp 0 and an empty machine name.
    Credentials::sys("", MAC_UID, MAC_GID, &MAC_GROUPS)
}

fn connect(addr: SocketAddr) -> RpcClient {
    let mut c = RpcClient::connect(addr).unwrap();
    c.credentials = mac_credentials();
    c
}

/// The kext's rsize from a mount option and FSINFO's preferred and
/// largest sizes: `roundup(pref, 512)` if smaller, then capped by max.
fn negotiated(option: u32, pref: u32, max: u32) -> u32 {
    let mut size = option;
    if pref < size {
        size = pref.div_ceil(512) * 512;
    }
    if max > 0 && max < size {
        size = if max & !511 != 0 { max & !511 } else { max };
    }
    size
}

impl MacV3 {
    /// `mount_nfs -o vers=3,port=P,mountport=P,rwsize=1048576,locallocks`:
    /// the kext's sequence with port and mountport given (no portmap, and
    /// no statd check with locallocks): NULL on the NFS socket
    /// (nfs_socket.c: nfs_connect), MNT on a socket of its own
    /// (nfs_vfsops.c: nfs3_mount_rpc), then GETATTR of the root, FSINFO,
    /// PATHCONF and FSSTAT (nfs3_mount, mountnfs). FSINFO and FSSTAT
    /// failing fail the mount.
    fn mount(addr: SocketAddr) -> MacV3 {
        let mut rpc = connect(addr);
        let (st, _) = rpc.call(NFS, 3, 0, &[]).unwrap();
        assert_eq!(st, ReplyStatus::Success, "NULL ping");

        let mut m = connect(addr);
        let (st, body) = m
            .call(MOUNT, 3, 1, &markbase_nfs::mount::mnt_args("/"))
            .unwrap();
        assert_eq!(st, ReplyStatus::Success);
        let mut d = Decoder::new(&body);
        assert_eq!(d.u32().unwrap(), 0, "MNT status");
        let root = handle(&mut d).unwrap();
        assert!(root.len() <= 64, "an NFSv3 handle is at most 64 bytes");
        // nfsm_chain_get_secinfo: an empty list counts as AUTH_SYS; a list
        // without AUTH_SYS or AUTH_NONE is EAUTH.
        let n = d.u32().unwrap();
        let flavors: Vec<u32> = (0..n).map(|_| d.u32().unwrap()).collect();
        assert!(flavors.is_empty() || flavors.contains(&1), "{flavors:?}");

        let mut mac = MacV3 {
            rpc,
            root: root.clone(),
            sizes: MountSizes {
                rsize: 0,
                wsize: 0,
                readdirsize: 0,
                maxfilesize: 0,
                properties: 0,
            },
            name_max: 0,
        };
        let attrs = mac.getattr(&root).unwrap();
        assert_eq!(attrs.kind, 2, "the root is a folder");

        let body = mac.ok(FSINFO, &fh_args(&root)).unwrap();
        let mut d = Decoder::new(&body);
        post_op_attr(&mut d).unwrap();
        let rtmax = d.u32().unwrap();
        let rtpref = d.u32().unwrap();
        let _rtmult = d.u32().unwrap();
        let wtmax = d.u32().unwrap();
        let wtpref = d.u32().unwrap();
        let _wtmult = d.u32().unwrap();
        let dtpref = d.u32().unwrap();
        let maxfilesize = d.u64().unwrap();
        time(&mut d).unwrap();
        let properties = d.u32().unwrap();
        // A preferred size of 0 would leave rsize 0, which nfs_bio.c
        // divides by.
        assert!(rtpref >= 4096 && wtpref >= 4096, "{rtpref} {wtpref}");
        let mut readdirsize = READDIRSIZE;
        if dtpref > 0 && dtpref < readdirsize {
            readdirsize = dtpref;
        }
        if rtmax > 0 && rtmax < readdirsize {
            readdirsize = rtmax;
        }
        mac.sizes = MountSizes {
            rsize: negotiated(RWSIZE, rtpref, rtmax),
            wsize: negotiated(RWSIZE, wtpref, wtmax),
            readdirsize,
            maxfilesize,
            properties,
        };

        // PATHCONF: errors are ignored; name_max 0 would fail every LOOKUP
        // with ENAMETOOLONG before it is sent (nfs_vnop_lookup).
        let body = mac.ok(PATHCONF, &fh_args(&root)).unwrap();
        let mut d = Decoder::new(&body);
        post_op_attr(&mut d).unwrap();
        let _linkmax = d.u32().unwrap();
        mac.name_max = d.u32().unwrap();

        let body = mac.ok(FSSTAT, &fh_args(&root)).unwrap();
        let mut d = Decoder::new(&body);
        post_op_attr(&mut d).unwrap();
        let (tbytes, fbytes, abytes) = (d.u64().unwrap(), d.u64().unwrap(), d.u64().unwrap());
        assert!(fbytes <= tbytes && abytes <= fbytes, "FSSTAT bytes");
        mac
    }

    /// One call: the NFS status and the rest of the reply.
    fn call(&mut self, procedure: u32, args: &[u8]) -> (u32, Vec<u8>) {
        let (st, body) = self.rpc.call(NFS, 3, procedure, args).unwrap();
        assert_eq!(st, ReplyStatus::Success, "procedure {procedure}");
        let mut d = Decoder::new(&body);
        let status = d.u32().expect("a status (EBADRPC)");
        (status, d.rest().to_vec())
    }

    /// A call that must succeed; its results after the status.
    fn ok(&mut self, procedure: u32, args: &[u8]) -> Result<Vec<u8>, u32> {
        let (status, rest) = self.call(procedure, args);
        if status != 0 {
            return Err(status);
        }
        Ok(rest)
    }

    fn getattr(&mut self, fh: &[u8]) -> Result<Fattr, u32> {
        let body = self.ok(GETATTR, &fh_args(fh))?;
        let mut d = Decoder::new(&body);
        Ok(fattr(&mut d).unwrap())
    }

    /// LOOKUP (nfs3_lookup_rpc_async/_finish): the handle, the object's
    /// attributes (missing: the kext sends a GETATTR) and the folder's.
    fn lookup(&mut self, dir: &[u8], name: &str) -> Result<(Vec<u8>, Fattr), u32> {
        let (status, rest) = self.call(LOOKUP, &dirop_args(dir, name));
        let mut d = Decoder::new(&rest);
        if status != 0 {
            post_op_attr(&mut d).unwrap();
            return Err(status);
        }
        let fh = handle(&mut d).unwrap();
        let obj = post_op_attr(&mut d)
            .unwrap()
            .expect("LOOKUP's object attributes (else one more GETATTR)");
        let dir_attrs = post_op_attr(&mut d).unwrap();
        assert!(dir_attrs.is_some(), "LOOKUP's folder attributes");
        Ok((fh, obj))
    }

    /// READDIRPLUS as nfs3_readdir_rpc sends it: dircount = readdirsize,
    /// maxcount = rsize, the verifier 0 on the first call and then the last
    /// one received. Checks what the kext checks per entry.
    fn readdirplus(&mut self, dir: &[u8]) -> Vec<(String, Fattr, Vec<u8>)> {
        let mut out = Vec::new();
        let (mut cookie, mut verf) = (0u64, [0u8; 8]);
        let mut cookies = HashSet::new();
        loop {
            let mut e = Encoder::new();
            e.opaque(dir);
            e.u64(cookie);
            e.fixed(&verf);
            e.u32(self.sizes.readdirsize);
            e.u32(self.sizes.rsize);
            let body = self.ok(READDIRPLUS, &e.buf).expect("READDIRPLUS");
            let mut d = Decoder::new(&body);
            post_op_attr(&mut d)
                .unwrap()
                .expect("the folder's attributes");
            verf = d.array::<8>().unwrap();
            let before = cookie;
            while bool_of(&mut d).unwrap() {
                let fileid = d.u64().unwrap();
                let name = d.opaque(usize::MAX).unwrap();
                // A name of length 0 fails the whole listing (EBADRPC); one
                // with '/' is dropped.
                assert!(!name.is_empty(), "empty name (EBADRPC)");
                assert!(!name.contains(&b'/'), "a name with '/'");
                let name = String::from_utf8(name.to_vec()).unwrap();
                cookie = d.u64().unwrap();
                assert!(cookies.insert(cookie), "{name}: cookie {cookie} again");
                let attrs = post_op_attr(&mut d).unwrap();
                let fh = if bool_of(&mut d).unwrap() {
                    Some(handle(&mut d).unwrap())
                } else {
                    None
                };
                if name == "." || name == ".." {
                    continue;
                }
                let attrs = attrs.unwrap_or_else(|| panic!("{name}: no attributes"));
                // The entry's fileid overrides the fattr's in the cache:
                // they must agree.
                assert_eq!(attrs.fileid, fileid, "{name}");
                out.push((name.clone(), attrs, fh.expect(&name)));
            }
            if bool_of(&mut d).unwrap() {
                return out;
            }
            // "cookie didn't change" is EIO (nfs_vnop_readdir).
            assert_ne!(cookie, before, "no progress without eof");
        }
    }

    /// CREATE (nfs3_vnop_create): the new handle and attributes (a missing
    /// handle costs a LOOKUP, missing attributes a GETATTR) and the
    /// folder's wcc.
    fn create(
        &mut self,
        dir: &[u8],
        name: &str,
        how: Create,
    ) -> Result<(Vec<u8>, Fattr, Wcc), u32> {
        let mut e = Encoder::new();
        e.opaque(dir);
        e.string(name);
        match how {
            Create::Unchecked(mode) => {
                e.u32(0);
                Sattr {
                    mode: Some(mode),
                    ..Sattr::default()
                }
                .encode(&mut e);
            }
            Create::Exclusive(verf) => {
                e.u32(2);
                e.fixed(&verf);
            }
        }
        let (status, rest) = self.call(CREATE, &e.buf);
        let mut d = Decoder::new(&rest);
        if status != 0 {
            wcc(&mut d).unwrap();
            return Err(status);
        }
        assert!(bool_of(&mut d).unwrap(), "CREATE without a handle");
        let fh = handle(&mut d).unwrap();
        let attrs = post_op_attr(&mut d).unwrap().expect("CREATE's attributes");
        Ok((fh, attrs, wcc(&mut d).unwrap()))
    }

    fn setattr(&mut self, fh: &[u8], s: Sattr) -> Result<Wcc, u32> {
        let mut e = Encoder::new();
        e.opaque(fh);
        s.encode(&mut e);
        // The guard is always FALSE (nfs3_setattr_rpc).
        e.bool(false);
        let (status, rest) = self.call(SETATTR, &e.buf);
        let w = wcc(&mut Decoder::new(&rest)).unwrap();
        if status != 0 {
            return Err(status);
        }
        Ok(w)
    }

    /// WRITE (nfs3_write_rpc_async_finish): count, committed, verifier; a
    /// count of 0 is EIO.
    fn write(&mut self, fh: &[u8], offset: u64, data: &[u8], stable: u32) -> (u32, u32, [u8; 8]) {
        let mut e = Encoder::new();
        e.opaque(fh);
        e.u64(offset);
        e.u32(data.len() as u32);
        e.u32(stable);
        e.opaque(data);
        let body = self.ok(WRITE, &e.buf).expect("WRITE");
        let mut d = Decoder::new(&body);
        let w = wcc(&mut d).unwrap();
        assert!(w.before.is_some() && w.after.is_some(), "WRITE's wcc");
        let count = d.u32().unwrap();
        assert!(count > 0, "a WRITE of 0 bytes is EIO");
        (count, d.u32().unwrap(), d.array::<8>().unwrap())
    }

    /// COMMIT of the dirty range (nfs_flushcommits): never 0/0.
    fn commit(&mut self, fh: &[u8], offset: u64, count: u32) -> [u8; 8] {
        let mut e = Encoder::new();
        e.opaque(fh);
        e.u64(offset);
        e.u32(count);
        let body = self.ok(COMMIT, &e.buf).expect("COMMIT");
        let mut d = Decoder::new(&body);
        wcc(&mut d).unwrap();
        d.array::<8>().unwrap()
    }

    fn read(&mut self, fh: &[u8], offset: u64, count: u32) -> (Vec<u8>, bool) {
        let mut e = Encoder::new();
        e.opaque(fh);
        e.u64(offset);
        e.u32(count);
        let body = self.ok(READ, &e.buf).expect("READ");
        let mut d = Decoder::new(&body);
        post_op_attr(&mut d).unwrap();
        let n = d.u32().unwrap();
        let eof = bool_of(&mut d).unwrap();
        let data = d.opaque(usize::MAX).unwrap().to_vec();
        assert_eq!(n as usize, data.len());
        (data, eof)
    }

    fn access(&mut self, fh: &[u8]) -> u32 {
        let mut e = Encoder::new();
        e.opaque(fh);
        e.u32(ACCESS_ALL);
        let body = self.ok(ACCESS, &e.buf).expect("ACCESS");
        let mut d = Decoder::new(&body);
        post_op_attr(&mut d).unwrap().expect("ACCESS's attributes");
        d.u32().unwrap()
    }

    fn remove(&mut self, dir: &[u8], name: &str) -> Result<Wcc, u32> {
        let (status, rest) = self.call(REMOVE, &dirop_args(dir, name));
        let w = wcc(&mut Decoder::new(&rest)).unwrap();
        if status != 0 {
            return Err(status);
        }
        Ok(w)
    }

    fn rename(&mut self, from: &[u8], old: &str, to: &[u8], new: &str) -> Result<(), u32> {
        let mut args = dirop_args(from, old);
        args.extend(dirop_args(to, new));
        let (status, rest) = self.call(RENAME, &args);
        let mut d = Decoder::new(&rest);
        let (a, b) = (wcc(&mut d).unwrap(), wcc(&mut d).unwrap());
        assert!(a.before.is_some() && b.before.is_some(), "RENAME's wcc");
        if status != 0 {
            return Err(status);
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Create {
    Unchecked(u32),
    Exclusive([u8; 8]),
}

/// The pre-op mtime of a change equals what the Mac cached before it, so
/// the kext takes the change as its own and keeps its caches
/// (nfsm_chain_get_wcc_data_f): a missing or different one purges them.
fn assert_own_change(w: &Wcc, cached: &Fattr, what: &str) {
    let before = w
        .before
        .unwrap_or_else(|| panic!("{what}: no pre-op attributes"));
    assert_eq!(before.mtime, cached.mtime, "{what}: pre-op mtime");
    assert!(w.after.is_some(), "{what}: no post-op attributes");
}

/// Mount, unmount: MNT over MOUNT v3, FSINFO sizes that keep the mount
/// line's 1 MiB, and UMNT as the kext sends it — MOUNT version 1 (before:
/// PROG_MISMATCH, so the server kept the Mac in its mount list forever).
#[test]
fn the_mount_and_unmount_as_the_kext_sends_them() {
    let srv = InProcess::start();
    let mac = MacV3::mount(srv.addr);
    assert_eq!(mac.sizes.rsize, RWSIZE, "{:?}", mac.sizes);
    assert_eq!(mac.sizes.wsize, RWSIZE, "{:?}", mac.sizes);
    assert!(mac.sizes.readdirsize >= 8192, "{:?}", mac.sizes);
    // The 2TB_FILESIZE volume capability needs at least 4 GB.
    assert!(mac.sizes.maxfilesize >= 4 << 30);
    // No FSF3_LINK: Finder's volume capabilities show no hard links.
    assert_eq!(mac.sizes.properties & 0x1, 0);
    assert_eq!(mac.name_max, 255);

    let mut m = connect(srv.addr);
    let dump = |m: &mut RpcClient| -> Vec<String> {
        let (_, body) = m.call(MOUNT, 3, 2, &[]).unwrap();
        let mut d = Decoder::new(&body);
        let mut paths = Vec::new();
        while d.u32().unwrap() == 1 {
            d.opaque(usize::MAX).unwrap();
            paths.push(String::from_utf8(d.opaque(usize::MAX).unwrap().to_vec()).unwrap());
        }
        paths
    };
    assert_eq!(dump(&mut m), vec!["/".to_string()]);
    // nfs3_umount_rpc: RPCMNT_VER1, procedure 3, the path after ':'.
    let (st, _) = m
        .call(MOUNT, 1, 3, &markbase_nfs::mount::mnt_args("/"))
        .unwrap();
    assert_eq!(st, ReplyStatus::Success, "UMNT over MOUNT v1");
    assert!(
        dump(&mut m).is_empty(),
        "the Mac is still listed as mounted"
    );
}

/// Finder opening the volume: READDIRPLUS through the whole generated tree
/// with the Mac's sizes. Every entry parses as the kext parses it, cookies
/// advance, fileids are unique and match GETATTR, and what the listing
/// primes the cache with (mtime to the nanosecond, size, type) is what
/// GETATTR answers, so the cache is not thrown away on the next look.
#[test]
fn finder_lists_the_tree_with_readdirplus_and_every_entry_parses() {
    let srv = InProcess::start_generated(|_| {});
    let mut mac = MacV3::mount(srv.addr);
    let mut seen = HashSet::new();
    let mut stack = vec![mac.root.clone()];
    let mut count = 0u64;
    while let Some(dir) = stack.pop() {
        assert_eq!(mac.access(&dir) & 0x3, 0x3, "READ and LOOKUP on a folder");
        for (name, a, fh) in mac.readdirplus(&dir) {
            count += 1;
            assert!(seen.insert(a.fileid), "{name}: fileid {} twice", a.fileid);
            assert_eq!((a.uid, a.gid), (MAC_UID, MAC_GID), "{name}");
            if count % 97 == 1 {
                assert_eq!(mac.getattr(&fh).unwrap(), a, "{name}: GETATTR differs");
            }
            if a.kind == 2 {
                stack.push(fh);
            }
        }
    }
    assert_eq!(count, srv.nfs.catalog().count().unwrap());
}

/// A Finder copy of a clip (the order of kext/nfs_vnops.c:
/// nfs3_vnop_create, nfs_dulookup_start, nfs_flush, nfs3_setattr_rpc), then
/// its AppleDouble file, which macOS writes for the Finder info and
/// extended attributes of a file on an NFSv3 volume (xnu vfs_xattr.c: the
/// v3 vnode table has no xattr operations).
#[test]
fn a_finder_copy_with_its_appledouble_file() {
    let srv = InProcess::start();
    let mut mac = MacV3::mount(srv.addr);
    let root = mac.root.clone();
    let dir_before = mac.getattr(&root).unwrap();
    assert_eq!(mac.lookup(&root, "A001.mov"), Err(NFS3ERR_NOENT));
    let (fh, attrs, w) = mac
        .create(&root, "A001.mov", Create::Unchecked(0o644))
        .unwrap();
    assert_own_change(&w, &dir_before, "CREATE");
    assert_eq!((attrs.kind, attrs.mode & 0o7777, attrs.size), (1, 0o644, 0));
    // The parallel lookup of its AppleDouble name.
    assert_eq!(mac.lookup(&root, "._A001.mov"), Err(NFS3ERR_NOENT));

    // Writes of wsize, UNSTABLE, then COMMIT of the dirty range.
    let data: Vec<u8> = (0..(2 * mac.sizes.wsize as usize + 12_345))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut verifiers = HashSet::new();
    for (i, chunk) in data.chunks(mac.sizes.wsize as usize).enumerate() {
        let offset = (i * mac.sizes.wsize as usize) as u64;
        let (count, _, verf) = mac.write(&fh, offset, chunk, UNSTABLE);
        assert_eq!(count as usize, chunk.len(), "a short write");
        verifiers.insert(verf);
    }
    let committed = mac.commit(&fh, 0, data.len() as u32);
    assert_eq!(verifiers.len(), 1, "the verifier moved between WRITEs");
    assert!(
        verifiers.contains(&committed),
        "COMMIT's verifier differs: rewrite"
    );

    // copyfile sets the source's times, to the nanosecond.
    let stamp = (1_764_000_000, 123_456_789);
    let before = mac.getattr(&fh).unwrap();
    let w = mac
        .setattr(
            &fh,
            Sattr {
                atime: SetTime::Client(stamp.0, stamp.1),
                mtime: SetTime::Client(stamp.0, stamp.1),
                ..Sattr::default()
            },
        )
        .unwrap();
    assert_own_change(&w, &before, "SETATTR");
    let after = mac.getattr(&fh).unwrap();
    assert_eq!(after.mtime, stamp, "mtime to the nanosecond");
    assert_eq!(after.size, data.len() as u64);

    // The AppleDouble file: created UNCHECKED with the file's mode & 0666,
    // a 4096-byte header written and read back, then the data file's mtime
    // set to itself to move its ctime.
    let (ad, _, _) = mac
        .create(&root, "._A001.mov", Create::Unchecked(0o644))
        .unwrap();
    let mut header = vec![0u8; 4096];
    header[..4].copy_from_slice(&0x0005_1607u32.to_be_bytes());
    header[4..8].copy_from_slice(&0x0002_0000u32.to_be_bytes());
    header[0x52..0x56].copy_from_slice(b"ATTR");
    let (_, _, verf) = mac.write(&ad, 0, &header, UNSTABLE);
    assert_eq!(mac.commit(&ad, 0, 4096), verf);
    assert_eq!(mac.read(&ad, 0, 4096), (header.clone(), true));
    let w = mac
        .setattr(
            &fh,
            Sattr {
                mtime: SetTime::Client(stamp.0, stamp.1),
                ..Sattr::default()
            },
        )
        .unwrap();
    assert_own_change(&w, &after, "SETATTR of the mtime to itself");
    let last = mac.getattr(&fh).unwrap();
    assert_eq!(last.mtime, stamp, "the Mac's caches live on mtime");
    assert!(last.ctime >= after.ctime);

    // The clip reads back whole, and both names list with their sizes.
    let mut back = Vec::new();
    loop {
        let (chunk, eof) = mac.read(&fh, back.len() as u64, mac.sizes.rsize);
        back.extend(chunk);
        if eof {
            break;
        }
    }
    assert!(back == data, "the copy reads back different");
    let listed: Vec<(String, u64)> = mac
        .readdirplus(&root)
        .into_iter()
        .filter(|(n, _, _)| n.contains("A001"))
        .map(|(n, a, _)| (n, a.size))
        .collect();
    assert_eq!(
        listed.iter().cloned().collect::<HashSet<_>>(),
        HashSet::from([
            ("A001.mov".to_string(), data.len() as u64),
            ("._A001.mov".to_string(), 4096),
        ])
    );
}

/// `open(O_CREAT|O_EXCL)`: CREATE EXCLUSIVE with the kext's verifier (its
/// IPv4 address, then the low half of an xid), answered again for a
/// retransmission, refused for another verifier, then the SETATTR that
/// always follows it — mode, and both times set to the server's
/// (nfs3_vnop_create).
#[test]
fn an_exclusive_create_and_the_setattr_that_follows() {
    let srv = InProcess::start();
    let mut mac = MacV3::mount(srv.addr);
    let root = mac.root.clone();
    let mut verf = [0u8; 8];
    verf[..4].copy_from_slice(&[127, 0, 0, 1]);
    verf[4..].copy_from_slice(&0x6553_0001u32.to_be_bytes());
    let (fh, first, _) = mac
        .create(&root, "render.lock", Create::Exclusive(verf))
        .unwrap();
    let (again, _, _) = mac
        .create(&root, "render.lock", Create::Exclusive(verf))
        .unwrap();
    assert_eq!(again, fh, "a retransmitted EXCLUSIVE create finds its file");
    let mut other = verf;
    other[7] ^= 1;
    assert_eq!(
        mac.create(&root, "render.lock", Create::Exclusive(other))
            .map(|_| ()),
        Err(NFS3ERR_EXIST)
    );
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    mac.setattr(
        &fh,
        Sattr {
            mode: Some(0o644),
            atime: SetTime::Server,
            mtime: SetTime::Server,
            ..Sattr::default()
        },
    )
    .unwrap();
    let a = mac.getattr(&fh).unwrap();
    assert_eq!((a.fileid, a.mode & 0o7777), (first.fileid, 0o644));
    assert!(a.mtime.0 + 5 >= start && a.atime.0 + 5 >= start, "{a:?}");
}

/// Removing or renaming over a file the Mac still has open: the kext
/// renames it to `.nfs.%08x.%04x` (LOOKUP until NOENT, RENAME, LOOKUP) and
/// removes that name at the last close (nfs_sillyrename,
/// nfs_vnop_inactive). The open file stays readable meanwhile. A second
/// REMOVE answers NOENT, which the kext takes as success.
#[test]
fn silly_rename_of_an_open_file_and_its_last_close() {
    let srv = InProcess::start();
    let mut mac = MacV3::mount(srv.addr);
    let root = mac.root.clone();
    let (fh, _, _) = mac
        .create(&root, "Cut 3.fcpxml", Create::Unchecked(0o644))
        .unwrap();
    mac.write(&fh, 0, b"<fcpxml/>", FILE_SYNC);
    let silly = ".nfs.20051025.1f3a";
    assert_eq!(mac.lookup(&root, silly), Err(NFS3ERR_NOENT));
    mac.rename(&root, "Cut 3.fcpxml", &root, silly).unwrap();
    let (same, attrs) = mac.lookup(&root, silly).unwrap();
    assert_eq!(same, fh, "the renamed file keeps its handle");
    assert_eq!(attrs.nlink, 1);
    assert_eq!(mac.read(&fh, 0, 4096).0, b"<fcpxml/>");
    assert_eq!(mac.lookup(&root, "Cut 3.fcpxml"), Err(NFS3ERR_NOENT));
    let dir = mac.getattr(&root).unwrap();
    let w = mac.remove(&root, silly).unwrap();
    assert_own_change(&w, &dir, "REMOVE");
    assert_eq!(mac.remove(&root, silly).map(|_| ()), Err(NFS3ERR_NOENT));
    assert_eq!(mac.lookup(&root, silly), Err(NFS3ERR_NOENT));
}

/// `ln` on the volume: LINK after a flush (nfs3_vnop_link). A catalog node
/// has one name, so the answer is MLINK (linkmax 1), which the Mac shows
/// as "Too many links"; NOTSUPP, the earlier answer, is one of the
/// statuses the kext turns into EIO (nfs_maperr).
#[test]
fn a_hard_link_is_refused_with_an_error_the_mac_can_name() {
    let srv = InProcess::start();
    let mut mac = MacV3::mount(srv.addr);
    let root = mac.root.clone();
    let (fh, _, _) = mac
        .create(&root, "LUT.cube", Create::Unchecked(0o644))
        .unwrap();
    let body = mac.ok(PATHCONF, &fh_args(&fh)).unwrap();
    let mut d = Decoder::new(&body);
    post_op_attr(&mut d).unwrap();
    assert_eq!(d.u32().unwrap(), 1, "linkmax");
    let mut e = Encoder::new();
    e.opaque(&fh);
    e.opaque(&root);
    e.string("LUT link.cube");
    let (status, rest) = mac.call(LINK, &e.buf);
    assert_eq!(status, NFS3ERR_MLINK);
    assert!(status < 10001, "the kext would make it EIO");
    let mut d = Decoder::new(&rest);
    assert_eq!(post_op_attr(&mut d).unwrap().map(|a| a.nlink), Some(1));
    wcc(&mut d).unwrap();
    assert_eq!(mac.lookup(&root, "LUT link.cube"), Err(NFS3ERR_NOENT));
}

/// Names as the Mac sends them without the `nfc` mount option: decomposed
/// (NFD), as APFS and Finder hand them to VFS (nfsm_chain_add_name). The
/// decomposed name finds the stored precomposed label, and an UNCHECKED
/// CREATE of it opens that file instead of making a second "Scène".
#[test]
fn decomposed_names_find_the_precomposed_label() {
    let srv = InProcess::start();
    let mut mac = MacV3::mount(srv.addr);
    let root = mac.root.clone();
    let (fh, _, _) = mac
        .create(&root, "Sc\u{e8}ne 12.mov", Create::Unchecked(0o644))
        .unwrap();
    let nfd = "Sce\u{300}ne 12.mov";
    assert_eq!(mac.lookup(&root, nfd).map(|(f, _)| f), Ok(fh.clone()));
    let (again, _, _) = mac.create(&root, nfd, Create::Unchecked(0o644)).unwrap();
    assert_eq!(again, fh, "a second node for the same name");
    let names: Vec<String> = mac
        .readdirplus(&root)
        .into_iter()
        .map(|(n, _, _)| n)
        .filter(|n| n.contains("ne 12"))
        .collect();
    assert_eq!(names, vec!["Sc\u{e8}ne 12.mov".to_string()]);
}
