//! Every NFSv4 object type through the wire (RFC 7530 §16.4): symlinks,
//! FIFOs, sockets, block and character devices are created, looked up,
//! listed, renamed and removed; they live in the server's own table
//! (`markbase_nfs_specials`), never in the app's `file_nodes`, and survive
//! a restart.

mod common;

use common::*;
use markbase_nfs::nfs4::attrs::Bitmap;
use markbase_nfs::nfs4::consts::{attr, op, Status};
use markbase_nfs::tools::client::{CompoundArgs, Nfs4Client, OpenFile};
use markbase_nfs::xdr::{Decoder, Encoder};

const NF4REG: u32 = 1;
const NF4BLK: u32 = 3;
const NF4CHR: u32 = 4;
const NF4LNK: u32 = 5;
const NF4SOCK: u32 = 6;
const NF4FIFO: u32 = 7;

/// CREATE of `objtype` named `name` in `dir` (createtype4 body written by
/// `body`): the new handle, or the failing status.
fn create(
    c: &mut Nfs4Client,
    dir: &[u8],
    objtype: u32,
    body: impl FnOnce(&mut Encoder),
    name: &str,
) -> Result<Vec<u8>, u32> {
    let args = CompoundArgs::new()
        .putfh(dir)
        .op(op::CREATE, |e| {
            e.u32(objtype);
            body(e);
            e.string(name);
            Bitmap::of(&[attr::MODE]).encode(e);
            e.u32(4);
            e.u32(0o644);
        })
        .getfh();
    let reply = c.compound(&args).unwrap();
    let mut r = Nfs4Client::results(&reply);
    r.next(op::PUTFH).unwrap();
    let d = r.next(op::CREATE).map_err(|e| e.status().unwrap())?;
    d.fixed(4 + 8 + 8).unwrap();
    Bitmap::decode(d).unwrap();
    Ok(r.next(op::GETFH).unwrap().opaque(128).unwrap().to_vec())
}

/// The status of PUTFH `fh` + one op (args by `body`).
fn status_of_op(c: &mut Nfs4Client, fh: &[u8], opnum: u32, body: impl FnOnce(&mut Encoder)) -> u32 {
    let args = CompoundArgs::new().putfh(fh).op(opnum, body);
    status_of_ops(c, &args, &[op::PUTFH, opnum])
}

fn readlink(c: &mut Nfs4Client, fh: &[u8]) -> Result<Vec<u8>, u32> {
    let reply = c
        .compound(&CompoundArgs::new().putfh(fh).op(op::READLINK, |_| {}))
        .unwrap();
    let mut r = Nfs4Client::results(&reply);
    r.next(op::PUTFH).unwrap();
    let d = r.next(op::READLINK).map_err(|e| e.status().unwrap())?;
    Ok(d.opaque(8192).unwrap().to_vec())
}

/// (type, rawdev, size) of `fh`.
fn kind_of(c: &mut Nfs4Client, fh: &[u8]) -> (u32, (u32, u32), u64) {
    let v = getattr(c, fh, &[attr::TYPE, attr::SIZE, attr::RAWDEV]);
    let mut d = Decoder::new(&v);
    let t = d.u32().unwrap();
    let size = d.u64().unwrap();
    let rdev = (d.u32().unwrap(), d.u32().unwrap());
    (t, rdev, size)
}

/// Names and types of a folder's entries (one READDIR page).
fn listing(c: &mut Nfs4Client, dir: &[u8]) -> Vec<(String, u32)> {
    let args = CompoundArgs::new().putfh(dir).op(op::READDIR, |e| {
        e.u64(0);
        e.fixed(&[0; 8]);
        e.u32(65536);
        e.u32(65536);
        Bitmap::of(&[attr::TYPE]).encode(e);
    });
    let reply = c.compound(&args).unwrap();
    let mut r = Nfs4Client::results(&reply);
    r.next(op::PUTFH).unwrap();
    let d = r.next(op::READDIR).unwrap();
    d.fixed(8).unwrap();
    let mut out = Vec::new();
    while d.bool().unwrap() {
        d.u64().unwrap();
        let name = String::from_utf8(d.opaque(1024).unwrap().to_vec()).unwrap();
        Bitmap::decode(d).unwrap();
        let vals = d.opaque(1024).unwrap();
        out.push((name, u32::from_be_bytes(vals[..4].try_into().unwrap())));
    }
    out.sort();
    out
}

/// Rows of the app's table and of ours with `label`.
fn rows_with_label(db: &std::path::Path, label: &str) -> (i64, i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let count = |table: &str| -> i64 {
        conn.query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE label = ?1"),
            [label],
            |r| r.get(0),
        )
        .unwrap()
    };
    (count("file_nodes"), count("markbase_nfs_specials"))
}

/// Waits (up to 5 s) for the rows with `label` to be `want`: a reply is
/// durable through the server's journal, and SQLite, where the app looks,
/// catches up a moment later.
fn assert_rows(db: &std::path::Path, label: &str, want: (i64, i64), what: &str) {
    let mut got = rows_with_label(db, label);
    common::wait_until(std::time::Duration::from_secs(5), || {
        got = rows_with_label(db, label);
        got == want
    });
    assert_eq!(got, want, "{what}");
}

#[test]
fn every_object_type_is_created_listed_renamed_and_removed() {
    let srv = InProcess::start();
    let db = srv.dir.path().join("users/demo.sqlite");
    let mut c = Nfs4Client::connect(srv.addr, "types").unwrap();
    let dir = c.lookup("Projects").unwrap();

    let link = create(
        &mut c,
        &dir,
        NF4LNK,
        |e| e.string("../Library/LUT.cube"),
        "LUT link",
    )
    .unwrap();
    let fifo = create(&mut c, &dir, NF4FIFO, |_| {}, "render.pipe").unwrap();
    let sock = create(&mut c, &dir, NF4SOCK, |_| {}, "agent.sock").unwrap();
    let blk = create(
        &mut c,
        &dir,
        NF4BLK,
        |e| {
            e.u32(8);
            e.u32(1);
        },
        "disk1",
    )
    .unwrap();
    let chr = create(
        &mut c,
        &dir,
        NF4CHR,
        |e| {
            e.u32(1);
            e.u32(3);
        },
        "null",
    )
    .unwrap();

    assert_eq!(readlink(&mut c, &link).unwrap(), b"../Library/LUT.cube");
    assert_eq!(kind_of(&mut c, &link), (NF4LNK, (0, 0), 19));
    assert_eq!(kind_of(&mut c, &fifo).0, NF4FIFO);
    assert_eq!(kind_of(&mut c, &sock).0, NF4SOCK);
    assert_eq!(kind_of(&mut c, &blk), (NF4BLK, (8, 1), 0));
    assert_eq!(kind_of(&mut c, &chr), (NF4CHR, (1, 3), 0));
    // LOOKUP finds them by name, to the same handles.
    assert_eq!(c.lookup("Projects/LUT link").unwrap(), link);
    assert_eq!(c.lookup("Projects/null").unwrap(), chr);
    let listed = listing(&mut c, &dir);
    for (name, t) in [
        ("LUT link", NF4LNK),
        ("render.pipe", NF4FIFO),
        ("agent.sock", NF4SOCK),
        ("disk1", NF4BLK),
        ("null", NF4CHR),
        ("README.txt", NF4REG),
    ] {
        assert!(
            listed.contains(&(name.to_string(), t)),
            "{name} in {listed:?}"
        );
    }

    // What is not theirs to do.
    assert_eq!(
        readlink(&mut c, &fifo),
        Err(Status::Inval.code()),
        "READLINK of a FIFO"
    );
    let st = status_of_op(&mut c, &link, op::LOOKUP, |e| e.string("x"));
    assert_eq!(st, Status::Symlink.code(), "LOOKUP through a symlink");
    let st = status_of_op(&mut c, &chr, op::LOOKUP, |e| e.string("x"));
    assert_eq!(st, Status::NotDir.code(), "LOOKUP in a device");
    let anonymous = OpenFile {
        fh: fifo.clone(),
        stateid: (0, [0; 12]),
    };
    let st = c.read(&anonymous, 0, 10).unwrap_err().status();
    assert_eq!(st, Some(Status::Inval.code()), "READ of a FIFO");
    let st = create(&mut c, &dir, NF4LNK, |e| e.string(""), "empty").unwrap_err();
    assert_eq!(st, Status::Inval.code(), "a symlink to nothing");
    let st = create(&mut c, &dir, NF4REG, |_| {}, "plain").unwrap_err();
    assert_eq!(st, Status::BadType.code(), "a file by CREATE");
    let st = create(&mut c, &dir, NF4FIFO, |_| {}, "README.txt").unwrap_err();
    assert_eq!(st, Status::Exist.code(), "a name taken by a file");

    // None of them is the app's: its table holds folders and files only.
    assert_rows(&db, "LUT link", (0, 1), "a symlink is in our table");
    assert_rows(&db, "null", (0, 1), "a device is in our table");

    // RENAME moves a symlink; a file may replace it.
    let lib = c.lookup("Library").unwrap();
    c.rename(&dir, "LUT link", &lib, "LUT.cube link").unwrap();
    assert_eq!(c.lookup("Library/LUT.cube link").unwrap(), link);
    assert_eq!(readlink(&mut c, &link).unwrap(), b"../Library/LUT.cube");
    c.rename(&lib, "Notes café.txt", &lib, "LUT.cube link")
        .unwrap();
    let replaced_by = c.lookup("Library/LUT.cube link").unwrap();
    assert_eq!(kind_of(&mut c, &replaced_by).0, NF4REG);
    assert_rows(
        &db,
        "LUT.cube link",
        (1, 0),
        "replaced: gone from our table",
    );

    // REMOVE each.
    for name in ["render.pipe", "agent.sock", "disk1", "null"] {
        c.remove(&dir, name).unwrap();
        assert_rows(&db, name, (0, 0), name);
    }
    let left: Vec<u32> = listing(&mut c, &dir).into_iter().map(|(_, t)| t).collect();
    assert!(left.iter().all(|t| *t == NF4REG || *t == 2), "{left:?}");
}

#[test]
fn special_nodes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.sqlite");
    let storage = dir.path().join("storage");
    let mut server = Server::start(dir.path(), &db, &storage, 0);
    let addr = server.addr;
    let mut c = Nfs4Client::connect(addr, "restart").unwrap();
    let projects = c.lookup("Projects").unwrap();
    let link = create(
        &mut c,
        &projects,
        NF4LNK,
        |e| e.string("Demo Film/Footage"),
        "Footage",
    )
    .unwrap();
    let chr = create(
        &mut c,
        &projects,
        NF4CHR,
        |e| {
            e.u32(4);
            e.u32(64);
        },
        "tty",
    )
    .unwrap();
    drop(c);
    server.restart();
    let mut c = Nfs4Client::connect(addr, "restart-2").unwrap();
    // The handles a client kept still name them.
    assert_eq!(readlink(&mut c, &link).unwrap(), b"Demo Film/Footage");
    assert_eq!(kind_of(&mut c, &chr), (NF4CHR, (4, 64), 0));
    assert_eq!(c.lookup("Projects/Footage").unwrap(), link);
}
