//! Calls answered in place, on the network thread that read them
//! (`Dispatcher::try_in_place`): which may be, which must go to a metadata
//! thread, and that an answer in place is the one a thread gives.

mod common;

use common::*;
use markbase_nfs::catalog::NodeId;
use markbase_nfs::nfs4::consts::{op, Status, NFS4_PROGRAM};
use markbase_nfs::rpc::message::{decode_reply, encode_call};
use markbase_nfs::rpc::{Credentials, Dispatcher, Outcome};
use markbase_nfs::tools::client::{CompoundArgs, CompoundReply, Create, Nfs4Client};
use markbase_nfs::xdr::Encoder;
use std::sync::Arc;

const TYPE: u32 = 1;
const FILEID: u32 = 20;

fn record(xid: u32, args: &CompoundArgs) -> Vec<u8> {
    args.call_record(xid, &Credentials::sys("edit-bay", 501, 20, &[]), "in-place")
}

fn bytes(o: Outcome) -> Vec<u8> {
    match o {
        Outcome::Reply(r) => r.to_vec(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// The COMPOUND status of a reply record.
fn status(reply: &[u8]) -> u32 {
    CompoundReply::of_reply_record(reply)
        .expect("a COMPOUND reply")
        .status
}

/// Answers `args` on a thread, as a call that may wait is answered.
fn on_thread(d: &Dispatcher, xid: u32, args: &CompoundArgs) -> u32 {
    status(&bytes(d.dispatch(&record(xid, args), None)))
}

/// The generated catalog served, its dispatcher, and one of its file
/// nodes read straight from SQLite (so nothing has loaded it into the
/// server's memory).
fn served_with_an_unloaded_file() -> (InProcess, Arc<Dispatcher>, NodeId) {
    let srv = InProcess::start_generated(|_| {});
    let d = markbase_nfs::serve::dispatcher_for(srv.nfs.clone());
    let conn = rusqlite::Connection::open(srv.dir.path().join("users/demo.sqlite")).unwrap();
    let id: String = conn
        .query_row(
            "SELECT node_id FROM file_nodes WHERE node_type = 'file' AND parent_id IS NOT NULL
              ORDER BY node_id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (srv, d, NodeId::text(&id))
}

#[test]
fn a_call_answered_from_memory_is_answered_in_place_as_a_thread_would() {
    let srv = InProcess::start_generated(|_| {});
    let d = markbase_nfs::serve::dispatcher_for(srv.nfs.clone());
    let args = CompoundArgs::new().putrootfh().getattr(&[TYPE, FILEID]);
    let here = d
        .try_in_place(&record(7, &args), None)
        .expect("the root is always in memory");
    assert_eq!(bytes(here), bytes(d.dispatch(&record(7, &args), None)));
    // NULL too.
    let mut e = Encoder::new();
    encode_call(&mut e, 8, NFS4_PROGRAM, 4, 0, &Credentials::None);
    assert!(d.try_in_place(&e.buf, None).is_some());
}

#[test]
fn a_node_not_in_memory_goes_to_a_thread_once_then_is_answered_in_place() {
    let (_srv, d, id) = served_with_an_unloaded_file();
    let fh = markbase_nfs::export::handle::encode(1, &id).unwrap();
    let args = CompoundArgs::new().putfh(&fh).getattr(&[TYPE, FILEID]);
    assert!(
        d.try_in_place(&record(1, &args), None).is_none(),
        "node {id} has to be read from SQLite: not on a network thread"
    );
    assert_eq!(on_thread(&d, 2, &args), Status::Ok.code());
    let here = d
        .try_in_place(&record(3, &args), None)
        .expect("loaded once, the node is in memory");
    assert_eq!(status(&bytes(here)), Status::Ok.code());
    // A name the loaded folder does not have is answered in place too:
    // the listing in memory is the whole folder.
    let args = CompoundArgs::new()
        .putrootfh()
        .lookup("no such folder")
        .getfh();
    let here = d
        .try_in_place(&record(4, &args), None)
        .or_else(|| {
            on_thread(&d, 5, &args);
            d.try_in_place(&record(6, &args), None)
        })
        .expect("the root's listing is in memory once read");
    assert_eq!(status(&bytes(here)), Status::NoEnt.code());
}

#[test]
fn changes_to_the_namespace_or_data_always_go_to_a_thread_untouched() {
    let srv = InProcess::start();
    let d = markbase_nfs::serve::dispatcher_for(srv.nfs.clone());
    let mut c = Nfs4Client::connect(srv.addr, "mover").unwrap();
    let root = c.lookup("").unwrap();
    let f = c
        .open(&root, "cut.mov", Create::Unchecked { mode: 0o644 }, 3)
        .unwrap();
    c.close(&f).unwrap();
    let lookup = CompoundArgs::new().putfh(&root).lookup("cut.mov").getfh();
    assert_eq!(on_thread(&d, 1, &lookup), Status::Ok.code());
    // Each after a LOOKUP that could run in place: the LOOKUP is undone
    // with the rest (it changed nothing), and the change is not made here.
    let changes = [
        CompoundArgs::new()
            .putfh(&root)
            .lookup("cut.mov")
            .op(op::PUTFH, |e| e.opaque(&root))
            .op(op::REMOVE, |e| e.string("cut.mov")),
        CompoundArgs::new()
            .putfh(&root)
            .op(op::SAVEFH, |_| {})
            .op(op::RENAME, |e| {
                e.string("cut.mov");
                e.string("final.mov");
            }),
        CompoundArgs::new().putfh(&root).op(op::CREATE, |e| {
            e.u32(2); // NF4DIR
            e.string("Renders");
            e.u32(0); // empty bitmap
            e.u32(0); // no attributes
        }),
        CompoundArgs::new().putfh(&f.fh).op(op::COMMIT, |e| {
            e.u64(0);
            e.u32(0);
        }),
    ];
    for (i, args) in changes.iter().enumerate() {
        assert!(
            d.try_in_place(&record(10 + i as u32, args), None).is_none(),
            "change {i} answered in place"
        );
    }
    assert_eq!(
        on_thread(&d, 20, &lookup),
        Status::Ok.code(),
        "cut.mov is still there"
    );
    let renders = CompoundArgs::new().putfh(&root).lookup("Renders");
    assert_eq!(on_thread(&d, 21, &renders), Status::NoEnt.code());
    // Run on a thread, the REMOVE takes effect.
    assert_eq!(on_thread(&d, 22, &changes[0]), Status::Ok.code());
    assert_eq!(on_thread(&d, 23, &lookup), Status::NoEnt.code());
}

#[test]
fn a_close_that_takes_the_content_with_it_goes_to_a_thread() {
    let srv = InProcess::start();
    let d = markbase_nfs::serve::dispatcher_for(srv.nfs.clone());
    let mut c = Nfs4Client::connect(srv.addr, "closer").unwrap();
    let root = c.lookup("").unwrap();
    let close = |f: &markbase_nfs::tools::client::OpenFile, seqid: u32| {
        let sid = f.stateid;
        CompoundArgs::new().putfh(&f.fh).op(op::CLOSE, move |e| {
            e.u32(seqid);
            e.u32(sid.0);
            e.fixed(&sid.1);
        })
    };
    // A plain CLOSE changes the open state only: answered in place.
    c.set_open_owner("first");
    let f = c
        .open(&root, "a.mov", Create::Unchecked { mode: 0o644 }, 3)
        .unwrap();
    let here = d
        .try_in_place(&record(1, &close(&f, c.next_seqid())), None)
        .expect("a CLOSE of a file still named is answered in place");
    assert_eq!(status(&bytes(here)), Status::Ok.code());
    assert_eq!(srv.nfs.state_counts().opens, 0);
    // The file removed while open: its content goes with the CLOSE, which
    // is I/O, so the CLOSE goes to a thread, and nothing of it was done.
    c.set_open_owner("second");
    let f = c
        .open(&root, "b.mov", Create::Unchecked { mode: 0o644 }, 3)
        .unwrap();
    c.remove(&root, "b.mov").unwrap();
    let args = close(&f, c.next_seqid());
    assert!(d.try_in_place(&record(2, &args), None).is_none());
    assert_eq!(srv.nfs.state_counts().opens, 1, "the open is still there");
    assert_eq!(on_thread(&d, 3, &args), Status::Ok.code());
    assert_eq!(srv.nfs.state_counts().opens, 0);
}

#[test]
fn nfsv3_reads_of_memory_are_answered_in_place_and_changes_are_not() {
    use markbase_nfs::nfs3::{proc3, NFS3_PROGRAM};
    let (_srv, d, id) = served_with_an_unloaded_file();
    let fh = markbase_nfs::export::handle::encode_within(1, &id, 64).unwrap();
    let v3 = |xid: u32, procedure: u32, args: &dyn Fn(&mut Encoder)| {
        let mut e = Encoder::new();
        encode_call(&mut e, xid, NFS3_PROGRAM, 3, procedure, &Credentials::None);
        args(&mut e);
        e.buf
    };
    // nfsstat3 is the first word of every NFSv3 result.
    let nfs3_status = |reply: &[u8]| {
        let (_, _, at) = decode_reply(reply).unwrap();
        u32::from_be_bytes(reply[at..at + 4].try_into().unwrap())
    };
    let getattr = v3(1, proc3::GETATTR, &|e| e.opaque(&fh));
    assert!(
        d.try_in_place(&getattr, None).is_none(),
        "node {id} has to be read from SQLite"
    );
    assert_eq!(nfs3_status(&bytes(d.dispatch(&getattr, None))), 0);
    let here = d.try_in_place(&getattr, None).expect("in memory now");
    assert_eq!(bytes(here), bytes(d.dispatch(&getattr, None)));
    // SETATTR (mode 0600, no guard) changes the node: never in place.
    let setattr = v3(2, proc3::SETATTR, &|e| {
        e.opaque(&fh);
        e.u32(1);
        e.u32(0o600);
        for _ in 0..5 {
            e.u32(0);
        }
        e.u32(0);
    });
    assert!(d.try_in_place(&setattr, None).is_none());
    assert_eq!(nfs3_status(&bytes(d.dispatch(&setattr, None))), 0);
}
