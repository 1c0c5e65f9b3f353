//! Several catalogs from one server (`[[export]]` tables): the NFSv4
//! pseudo-root lists them and leads into each, each export is its own file
//! system (fsid, handles, state), its own rules (clients, read-only), and
//! NFSv3's MOUNT serves each at its path. Both exports here are demo
//! catalogs, whose nodes have the same ids: what one export holds must
//! never be found, locked or changed through the other. The kernel client
//! mounting two exports is in `kernel_exports.rs`.

mod common;

use common::*;
use markbase_nfs::config::{Config, ExportConfig, ExportTables};
use markbase_nfs::mount::{mnt_args, MOUNT_PROGRAM, MOUNT_V3};
use markbase_nfs::nfs3::{proc3, NFS3_PROGRAM, NFS3_VERSION};
use markbase_nfs::nfs4::consts::{attr, op, Status, NF4DIR};
use markbase_nfs::rpc::message::ReplyStatus;
use markbase_nfs::tools::client::{CompoundArgs, Create, Nfs4Client, RpcClient};
use markbase_nfs::xdr::{Decoder, Encoder};

const BOTH: u32 = 3;
const WRITE_LT: u32 = 2;
const MNT3ERR_NOENT: u32 = 2;

/// Two demo catalogs, `/warren` (export id 1) and `/accusys` (id 2);
/// `accusys` tuned by `tune`.
fn two_exports(tune: impl FnOnce(&mut ExportConfig)) -> impl FnOnce(&mut Config) {
    move |cfg| {
        let users = cfg.export.db.parent().unwrap().to_path_buf();
        let warren = ExportConfig {
            path: "/warren".into(),
            db: users.join("warren.sqlite"),
            export_id: 1,
            ..ExportConfig::default()
        };
        let mut accusys = ExportConfig {
            path: "/accusys".into(),
            db: users.join("accusys.sqlite"),
            export_id: 2,
            ..ExportConfig::default()
        };
        tune(&mut accusys);
        cfg.export = ExportTables::several(vec![warren, accusys]).unwrap();
    }
}

/// The status and results of `args`, the server's raw answer.
fn run(c: &mut Nfs4Client, args: &CompoundArgs) -> Vec<u8> {
    c.compound(args).expect("COMPOUND")
}

/// GETATTR values of FSID (two u64) from a fattr4 holding only it.
fn fsid_of(d: &mut Decoder<'_>) -> (u64, u64) {
    let n = d.count(8, 4).unwrap();
    d.skip(4 * n).unwrap();
    let v = d.opaque(usize::MAX).unwrap();
    let mut v = Decoder::new(v);
    (v.u64().unwrap(), v.u64().unwrap())
}

/// The names READDIR lists in the folder `fh` (no attributes asked).
fn names_in(c: &mut Nfs4Client, fh: &[u8]) -> Vec<String> {
    let body = run(
        c,
        &CompoundArgs::new().putfh(fh).op(op::READDIR, |e| {
            e.u64(0);
            e.fixed(&[0; 8]);
            e.u32(8192);
            e.u32(32768);
            e.u32(1);
            e.u32(1 << attr::FSID);
        }),
    );
    let mut r = Nfs4Client::results(&body);
    r.next(op::PUTFH).unwrap();
    let d = r.next(op::READDIR).unwrap();
    d.fixed(8).unwrap();
    let mut names = Vec::new();
    while d.bool().unwrap() {
        d.u64().unwrap();
        names.push(String::from_utf8(d.opaque(255).unwrap().to_vec()).unwrap());
        let (major, _) = fsid_of(d);
        // An entry is an export's root, in that export's file system.
        assert_eq!(
            major,
            if names.last().unwrap() == "warren" {
                1
            } else {
                2
            }
        );
    }
    assert!(d.bool().unwrap(), "eof");
    names
}

#[test]
fn the_pseudo_root_lists_the_exports_and_leads_into_each() {
    let srv = InProcess::start_with(two_exports(|_| {}));
    let mut c = Nfs4Client::connect(srv.addr, "pseudo").unwrap();

    // `mount server:/` (the Mac): PUTROOTFH + GETATTR, the handle taken
    // from the FILEHANDLE attribute.
    let body = run(
        &mut c,
        &CompoundArgs::new()
            .putrootfh()
            .getattr(&[attr::TYPE, attr::FSID, attr::FILEHANDLE, attr::FILEID])
            .getfh(),
    );
    let mut r = Nfs4Client::results(&body);
    r.next(op::PUTROOTFH).unwrap();
    let d = r.next(op::GETATTR).unwrap();
    let n = d.count(8, 4).unwrap();
    d.skip(4 * n).unwrap();
    let values = d.opaque(usize::MAX).unwrap().to_vec();
    let pseudo_fh = r.next(op::GETFH).unwrap().opaque(128).unwrap().to_vec();
    let mut v = Decoder::new(&values);
    assert_eq!(v.u32().unwrap(), NF4DIR);
    assert_eq!((v.u64().unwrap(), v.u64().unwrap()), (0, 1), "pseudo fsid");
    assert_eq!(
        v.opaque(128).unwrap(),
        &pseudo_fh[..],
        "FILEHANDLE attribute"
    );
    let pseudo_fileid = v.u64().unwrap();

    assert_eq!(names_in(&mut c, &pseudo_fh), ["warren", "accusys"]);

    // `mount server:/warren` (the Mac, one COMPOUND per component).
    let body = run(
        &mut c,
        &CompoundArgs::new()
            .putrootfh()
            .lookup("warren")
            .getfh()
            .getattr(&[attr::FSID, attr::MOUNTED_ON_FILEID]),
    );
    let mut r = Nfs4Client::results(&body);
    r.next(op::PUTROOTFH).unwrap();
    r.next(op::LOOKUP).unwrap();
    let warren = r.next(op::GETFH).unwrap().opaque(128).unwrap().to_vec();
    let d = r.next(op::GETATTR).unwrap();
    let n = d.count(8, 4).unwrap();
    d.skip(4 * n).unwrap();
    let mut v = Decoder::new(d.opaque(usize::MAX).unwrap());
    assert_eq!(
        (v.u64().unwrap(), v.u64().unwrap()),
        (1, 0),
        "warren's fsid"
    );
    let mounted_on = v.u64().unwrap();
    assert_ne!(mounted_on, pseudo_fileid);

    // The Mac's mount fails on any SECINFO error of the last component.
    let body = run(
        &mut c,
        &CompoundArgs::new()
            .putrootfh()
            .op(op::SECINFO, |e| e.string("accusys")),
    );
    let mut r = Nfs4Client::results(&body);
    r.next(op::PUTROOTFH).unwrap();
    assert_eq!(
        r.next(op::SECINFO).unwrap().u32().unwrap(),
        2,
        "two flavours"
    );

    // Up from an export's root is the pseudo-root; nothing is made there.
    let body = run(
        &mut c,
        &CompoundArgs::new()
            .putfh(&warren)
            .op(op::LOOKUPP, |_| {})
            .getfh(),
    );
    let mut r = Nfs4Client::results(&body);
    r.next(op::PUTFH).unwrap();
    r.next(op::LOOKUPP).unwrap();
    assert_eq!(
        r.next(op::GETFH).unwrap().opaque(128).unwrap(),
        &pseudo_fh[..]
    );
    let made = c.open(&pseudo_fh, "new", Create::Unchecked { mode: 0o644 }, BOTH);
    assert_eq!(status_of(made), Status::RoFs.code());
    let made = status_of_ops(
        &mut c,
        &CompoundArgs::new().putfh(&pseudo_fh).op(op::CREATE, |e| {
            e.u32(NF4DIR);
            e.string("folder");
            e.u32(0);
            e.u32(0);
        }),
        &[op::PUTFH, op::CREATE],
    );
    assert_eq!(made, Status::RoFs.code());
    let missing = c.lookup("nobody").map(|_| ());
    assert_eq!(status_of(missing), Status::NoEnt.code());
}

#[test]
fn each_export_holds_its_own_catalog_and_state() {
    let srv = InProcess::start_with(two_exports(|_| {}));
    let mut c = Nfs4Client::connect(srv.addr, "each").unwrap();
    let w = c.lookup("warren/Projects").unwrap();
    let a = c.lookup("accusys/Projects").unwrap();
    assert_ne!(w, a, "the same node id in two exports: two handles");

    // A file made in one export is in that one only.
    let f = c
        .open(&w, "cut.prproj", Create::Unchecked { mode: 0o644 }, BOTH)
        .unwrap();
    c.write(&f, 0, b"warren's cut", 2).unwrap();
    c.close(&f).unwrap();
    assert!(c.lookup("warren/Projects/cut.prproj").is_ok());
    let there = c.lookup("accusys/Projects/cut.prproj").map(|_| ());
    assert_eq!(status_of(there), Status::NoEnt.code());

    // Both demo catalogs hold README.txt with one id: a lock on one is no
    // lock on the other (state is kept apart per export).
    let mut other = Nfs4Client::connect(srv.addr, "other").unwrap();
    let fw = c.open(&w, "README.txt", Create::No, BOTH).unwrap();
    let fa = other.open(&a, "README.txt", Create::No, BOTH).unwrap();
    c.lock(&fw, None, 0, WRITE_LT, 0, u64::MAX, b"w-owner")
        .expect("lock in warren");
    other
        .lock(&fa, None, 0, WRITE_LT, 0, u64::MAX, b"a-owner")
        .expect("lock of the same-id file in accusys");
    // Within one export the same lock conflicts.
    let mut third = Nfs4Client::connect(srv.addr, "third").unwrap();
    let fw3 = third.open(&w, "README.txt", Create::No, BOTH).unwrap();
    let denied = third.lock(&fw3, None, 0, WRITE_LT, 0, 10, b"t-owner");
    assert_eq!(status_of(denied), Status::Denied.code());

    // RENAME from one export into another: two file systems.
    let xdev = c.rename(&w, "cut.prproj", &a, "cut.prproj");
    assert_eq!(status_of(xdev), Status::XDev.code());
}

#[test]
fn each_export_keeps_its_own_clients_and_read_only_rule() {
    // accusys serves 10.0.0.0/8 only: the test, on 127.0.0.1, may not see it.
    let srv = InProcess::start_with(two_exports(|a| a.clients = vec!["10.0.0.0/8".into()]));
    let mut c = Nfs4Client::connect(srv.addr, "hidden").unwrap();
    let pseudo = c.lookup("").unwrap();
    assert_eq!(names_in(&mut c, &pseudo), ["warren"]);
    let refused = c.lookup("accusys").map(|_| ());
    assert_eq!(status_of(refused), Status::Access.code());
    // A handle of accusys got elsewhere is refused too.
    let exports = srv.nfs.exports();
    let accusys = &exports[1];
    let root = accusys.handle_of(&accusys.catalog().root()).unwrap();
    let refused = status_of_ops(
        &mut c,
        &CompoundArgs::new().putfh(&root).getattr(&[attr::TYPE]),
        &[op::PUTFH],
    );
    assert_eq!(refused, Status::Access.code());
    assert!(c.lookup("warren/Projects").is_ok());
    drop(srv);

    // The first export refuses the machine, the second serves it: the
    // first's handles are refused all the same.
    let srv = InProcess::start_with(|cfg| {
        two_exports(|_| {})(cfg);
        let mut tables = cfg.export.tables().to_vec();
        tables[0].clients = vec!["10.0.0.0/8".into()];
        cfg.export = ExportTables::several(tables).unwrap();
    });
    let mut c = Nfs4Client::connect(srv.addr, "second-only").unwrap();
    let pseudo = c.lookup("").unwrap();
    assert_eq!(names_in(&mut c, &pseudo), ["accusys"]);
    let warren = &srv.nfs.exports()[0];
    let root = warren.handle_of(&warren.catalog().root()).unwrap();
    let refused = status_of_ops(
        &mut c,
        &CompoundArgs::new().putfh(&root).getattr(&[attr::TYPE]),
        &[op::PUTFH],
    );
    assert_eq!(refused, Status::Access.code());
    assert!(c.lookup("accusys/Projects").is_ok());
    drop(srv);

    let srv = InProcess::start_with(two_exports(|a| a.read_only = true));
    let mut c = Nfs4Client::connect(srv.addr, "read-only").unwrap();
    let a = c.lookup("accusys/Projects").unwrap();
    let w = c.lookup("warren/Projects").unwrap();
    let made = c.open(&a, "new.txt", Create::Unchecked { mode: 0o644 }, BOTH);
    assert_eq!(status_of(made), Status::RoFs.code());
    let f = c
        .open(&w, "new.txt", Create::Unchecked { mode: 0o644 }, BOTH)
        .unwrap();
    c.close(&f).unwrap();
}

#[test]
fn mount_and_nfsv3_serve_each_export_at_its_path() {
    let srv = InProcess::start_with(two_exports(|_| {}));
    let mut rpc = RpcClient::connect(srv.addr).unwrap();
    let mut mnt = |path: &str| -> Result<Vec<u8>, u32> {
        let (st, body) = rpc
            .call(MOUNT_PROGRAM, MOUNT_V3, 1, &mnt_args(path))
            .unwrap();
        assert_eq!(st, ReplyStatus::Success);
        let mut d = Decoder::new(&body);
        match d.u32().unwrap() {
            0 => Ok(d.opaque(64).unwrap().to_vec()),
            s => Err(s),
        }
    };
    let warren = mnt("/warren").unwrap();
    let accusys = mnt("/accusys").unwrap();
    let projects = mnt("/accusys/Projects").unwrap();
    assert_ne!(warren, accusys);
    assert_eq!(mnt("/"), Err(MNT3ERR_NOENT), "no export at /");
    assert_eq!(mnt("/warrenx"), Err(MNT3ERR_NOENT));

    // The NFSv3 handle of an export's root is the NFSv4 one.
    let mut c = Nfs4Client::connect(srv.addr, "v3").unwrap();
    assert_eq!(c.lookup("accusys").unwrap(), accusys);

    // NFSv3 LOOKUP goes to the export the handle names: a file made in
    // accusys over NFSv4 is found there, and not in warren.
    let a = c.lookup("accusys/Projects").unwrap();
    assert_eq!(a, projects);
    let f = c
        .open(&a, "grade.drp", Create::Unchecked { mode: 0o644 }, BOTH)
        .unwrap();
    c.close(&f).unwrap();
    let mut rpc = RpcClient::connect(srv.addr).unwrap();
    assert_eq!(lookup_status(&mut rpc, &projects, "grade.drp"), 0);
    let w = c.lookup("warren/Projects").unwrap();
    assert_eq!(
        lookup_status(&mut rpc, &w, "grade.drp"),
        2,
        "NFS3ERR_NOENT in warren"
    );

    // "..", listed in a folder at the top of an export, is the export's
    // root, with the file id its GETATTR shows.
    let (_, body) = rpc
        .call(
            NFS3_PROGRAM,
            NFS3_VERSION,
            proc3::GETATTR,
            &fh_args(&accusys),
        )
        .unwrap();
    let mut d = Decoder::new(&body);
    assert_eq!(d.u32().unwrap(), 0);
    d.skip(4 * 5 + 8 * 4).unwrap(); // type … gid, size, used, rdev, fsid
    let root_fileid = d.u64().unwrap();
    let mut e = Encoder::new();
    e.opaque(&projects);
    e.u64(0);
    e.fixed(&[0; 8]);
    e.u32(8192);
    let (_, body) = rpc
        .call(NFS3_PROGRAM, NFS3_VERSION, proc3::READDIR, &e.buf)
        .unwrap();
    let mut d = Decoder::new(&body);
    assert_eq!(d.u32().unwrap(), 0);
    if d.bool().unwrap() {
        d.skip(84).unwrap(); // the folder's fattr3
    }
    d.fixed(8).unwrap();
    let mut dotdot = None;
    while d.bool().unwrap() {
        let fileid = d.u64().unwrap();
        let name = d.opaque(255).unwrap().to_vec();
        d.u64().unwrap();
        if name == b".." {
            dotdot = Some(fileid);
        }
    }
    assert_eq!(dotdot, Some(root_fileid));

    // RENAME from one export into the other is NFS3ERR_XDEV (RFC 1813
    // §3.3.14), as over NFSv4, and the file stays where it was.
    let mut rename = dirop_args(&projects, "grade.drp");
    rename.extend(dirop_args(&w, "grade.drp"));
    let (_, body) = rpc
        .call(NFS3_PROGRAM, NFS3_VERSION, proc3::RENAME, &rename)
        .unwrap();
    assert_eq!(Decoder::new(&body).u32().unwrap(), 18, "NFS3ERR_XDEV");
    assert_eq!(lookup_status(&mut rpc, &projects, "grade.drp"), 0);

    // EXPORT lists both (`showmount -e`).
    let (_, body) = rpc.call(MOUNT_PROGRAM, MOUNT_V3, 5, &[]).unwrap();
    let mut d = Decoder::new(&body);
    let mut paths = Vec::new();
    while d.bool().unwrap() {
        paths.push(String::from_utf8(d.opaque(1024).unwrap().to_vec()).unwrap());
        while d.bool().unwrap() {
            d.opaque(1024).unwrap();
        }
    }
    assert_eq!(paths, ["/warren", "/accusys"]);
}

/// The status of an NFSv3 LOOKUP of `name` in `dir`.
fn lookup_status(rpc: &mut RpcClient, dir: &[u8], name: &str) -> u32 {
    let (st, body) = rpc
        .call(
            NFS3_PROGRAM,
            NFS3_VERSION,
            proc3::LOOKUP,
            &dirop_args(dir, name),
        )
        .unwrap();
    assert_eq!(st, ReplyStatus::Success);
    Decoder::new(&body).u32().unwrap()
}
