//! Who may do what, through the wire: by default (`export.permissions =
//! "owner"`) every caller is every node's owner, as on one editor's own
//! Mac; with `"mode"` the caller's uid and groups meet each node's owner,
//! group and mode bits, and what a caller creates is its own.

mod common;

use common::*;
use markbase_nfs::nfs4::attrs::Bitmap;
use markbase_nfs::nfs4::consts::{attr, op, Status};
use markbase_nfs::rpc::Credentials;
use markbase_nfs::tools::client::{CompoundArgs, Create, Nfs4Client, OpenFile};

const READ: u32 = 1;
const WRITE: u32 = 2;

fn as_user(c: &mut Nfs4Client, uid: u32, gid: u32, gids: &[u32]) {
    c.rpc.credentials = Credentials::sys("", uid, gid, gids);
}

/// The rights ACCESS grants on `fh` (asked: all six).
fn granted(c: &mut Nfs4Client, fh: &[u8]) -> u32 {
    let args = CompoundArgs::new()
        .putfh(fh)
        .op(op::ACCESS, |e| e.u32(0x3f));
    let body = c.compound(&args).unwrap();
    let mut r = Nfs4Client::results(&body);
    r.next(op::PUTFH).unwrap();
    let d = r.next(op::ACCESS).unwrap();
    d.u32().unwrap();
    d.u32().unwrap()
}

/// SETATTR of the mode, by the anonymous stateid: its status.
fn chmod(c: &mut Nfs4Client, fh: &[u8], mode: u32) -> u32 {
    let args = CompoundArgs::new().putfh(fh).op(op::SETATTR, |e| {
        e.fixed(&[0u8; 16]);
        Bitmap::of(&[attr::MODE]).encode(e);
        e.u32(4);
        e.u32(mode);
    });
    status_of_ops(c, &args, &[op::PUTFH, op::SETATTR])
}

/// A file `name` in Projects made by uid 1000 (group 1000) with `mode`,
/// holding `data`, closed.
fn made_by_1000(c: &mut Nfs4Client, dir: &[u8], name: &str, mode: u32, data: &[u8]) -> OpenFile {
    as_user(c, 1000, 1000, &[]);
    let f = c
        .open(dir, name, Create::Unchecked { mode }, READ | WRITE)
        .unwrap();
    c.write(&f, 0, data, 2).unwrap();
    c.close(&f).unwrap();
    f
}

#[test]
fn by_default_every_caller_is_the_owner() {
    let srv = InProcess::start();
    let mut c = Nfs4Client::connect(srv.addr, "one-editor").unwrap();
    let dir = c.lookup("Projects").unwrap();
    made_by_1000(&mut c, &dir, "mine.mov", 0o700, b"take 1");
    as_user(&mut c, 1001, 1001, &[]);
    let f = c.open(&dir, "mine.mov", Create::No, WRITE).unwrap();
    c.write(&f, 0, b"TAKE", 2).unwrap();
    c.close(&f).unwrap();
    assert_eq!(chmod(&mut c, &f.fh, 0o600), Status::Ok.code());
}

#[test]
fn where_the_export_checks_modes_another_uid_is_refused() {
    let srv = InProcess::start_with(|cfg| cfg.export.permissions = "mode".into());
    let mut c = Nfs4Client::connect(srv.addr, "studio").unwrap();
    let dir = c.lookup("Projects").unwrap();
    let private = made_by_1000(&mut c, &dir, "private.mov", 0o700, b"take 1");
    let shared = made_by_1000(&mut c, &dir, "shared.mov", 0o640, b"take 2");

    // Another uid, not in the group: no open, no rights, no chmod, no
    // write without an open.
    as_user(&mut c, 1001, 1001, &[]);
    let st = status_of(c.open(&dir, "private.mov", Create::No, WRITE));
    assert_eq!(st, Status::Access.code(), "open for write");
    let st = status_of(c.open(&dir, "private.mov", Create::No, READ));
    assert_eq!(st, Status::Access.code(), "open for read");
    assert_eq!(granted(&mut c, &private.fh), 0);
    assert_eq!(chmod(&mut c, &private.fh, 0o777), Status::Perm.code());
    let anonymous = OpenFile {
        fh: private.fh.clone(),
        stateid: (0, [0; 12]),
    };
    let st = status_of(c.write(&anonymous, 0, b"XX", 2));
    assert_eq!(st, Status::Access.code(), "write without an open");
    let st = status_of(c.read(&anonymous, 0, 16));
    assert_eq!(st, Status::Access.code(), "read without an open");

    // In the file's group: the group's bits (read, not write).
    as_user(&mut c, 1001, 1001, &[1000]);
    let f = c.open(&dir, "shared.mov", Create::No, READ).unwrap();
    assert_eq!(c.read(&f, 0, 16).unwrap().0, b"take 2");
    c.close(&f).unwrap();
    let st = status_of(c.open(&dir, "shared.mov", Create::No, WRITE));
    assert_eq!(
        st,
        Status::Access.code(),
        "group member writing a 0640 file"
    );
    assert_eq!(granted(&mut c, &shared.fh), 0x01, "group: READ only");

    // The owner and root may.
    as_user(&mut c, 1000, 1000, &[]);
    let f = c.open(&dir, "private.mov", Create::No, WRITE).unwrap();
    c.write(&f, 0, b"TAKE", 2).unwrap();
    c.close(&f).unwrap();
    as_user(&mut c, 0, 0, &[]);
    let f = c.open(&dir, "private.mov", Create::No, READ).unwrap();
    assert_eq!(c.read(&f, 0, 16).unwrap().0, b"TAKE 1");
    c.close(&f).unwrap();
    assert_eq!(chmod(&mut c, &private.fh, 0o600), Status::Ok.code());
}

#[test]
fn a_private_folder_is_closed_to_other_uids() {
    let srv = InProcess::start_with(|cfg| cfg.export.permissions = "mode".into());
    let mut c = Nfs4Client::connect(srv.addr, "studio").unwrap();
    let projects = c.lookup("Projects").unwrap();
    as_user(&mut c, 1000, 1000, &[]);
    let mkdir = CompoundArgs::new()
        .putfh(&projects)
        .op(op::CREATE, |e| {
            e.u32(2); // NF4DIR
            e.string("Private");
            Bitmap::of(&[attr::MODE]).encode(e);
            e.u32(4);
            e.u32(0o700);
        })
        .getfh();
    let body = c.compound(&mkdir).unwrap();
    let mut r = Nfs4Client::results(&body);
    r.next(op::PUTFH).unwrap();
    let d = r.next(op::CREATE).unwrap();
    d.fixed(4 + 8 + 8).unwrap(); // change_info4
    Bitmap::decode(d).unwrap();
    let private = r.next(op::GETFH).unwrap().opaque(128).unwrap().to_vec();
    let f = c
        .open(
            &private,
            "cut.xml",
            Create::Unchecked { mode: 0o644 },
            WRITE,
        )
        .unwrap();
    c.close(&f).unwrap();

    as_user(&mut c, 1001, 1001, &[]);
    let lookup = CompoundArgs::new().putfh(&private).lookup("cut.xml");
    let st = status_of_ops(&mut c, &lookup, &[op::PUTFH, op::LOOKUP]);
    assert_eq!(st, Status::Access.code(), "lookup in it");
    let st = status_of(c.open(
        &private,
        "new.xml",
        Create::Unchecked { mode: 0o644 },
        WRITE,
    ));
    assert_eq!(st, Status::Access.code(), "create in it");
    let st = status_of(c.remove(&private, "cut.xml"));
    assert_eq!(st, Status::Access.code(), "remove in it");
    let readdir = CompoundArgs::new().putfh(&private).op(op::READDIR, |e| {
        e.u64(0);
        e.fixed(&[0; 8]);
        e.u32(4096);
        e.u32(4096);
        Bitmap::default().encode(e);
    });
    let st = status_of_ops(&mut c, &readdir, &[op::PUTFH, op::READDIR]);
    assert_eq!(st, Status::Access.code(), "list it");

    // Its owner still does all of it.
    as_user(&mut c, 1000, 1000, &[]);
    let st = status_of_ops(&mut c, &lookup, &[op::PUTFH, op::LOOKUP]);
    assert_eq!(st, Status::Ok.code(), "the owner's lookup");
    c.remove(&private, "cut.xml").unwrap();
}
