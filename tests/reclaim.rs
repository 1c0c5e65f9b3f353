//! NFSv4 reclaim after a restart when the list of exports changed in
//! between: the clients a run recorded may reclaim in the next one wherever
//! their records were kept (a server process with `serve --users`).

mod common;

use common::*;
use markbase_nfs::nfs4::consts::{op, OPEN4_SHARE_ACCESS_BOTH};
use markbase_nfs::tools::client::{ClientError, CompoundArgs, Create, Nfs4Client};

const RECLAIM_BAD: u32 = 10034;
const STALE_STATEID: u32 = 10023;

/// Status of OPEN with CLAIM_PREVIOUS of the file `fh`, by `c`'s client id.
fn reclaim_open(c: &mut Nfs4Client, fh: &[u8]) -> u32 {
    let (clientid, seqid) = (c.clientid, c.next_seqid());
    let args = CompoundArgs::new().putfh(fh).op(op::OPEN, |e| {
        e.u32(seqid);
        e.u32(OPEN4_SHARE_ACCESS_BOTH);
        e.u32(0);
        e.u64(clientid);
        e.opaque(b"reclaiming-owner");
        e.u32(0); // OPEN4_NOCREATE
        e.u32(1); // CLAIM_PREVIOUS
        e.u32(0); // OPEN_DELEGATE_NONE
    });
    let body = c.compound(&args).unwrap();
    let mut r = Nfs4Client::results(&body);
    r.next(op::PUTFH).unwrap();
    match r.next(op::OPEN) {
        Ok(_) => 0,
        Err(ClientError::Nfs(_, status)) => status,
        Err(e) => panic!("OPEN: {e:?}"),
    }
}

fn sqlite_clients(db: &std::path::Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM markbase_nfs_clients", [], |r| {
            r.get(0)
        })
        .unwrap()
}

/// A user added under `serve --users` whose name sorts first becomes the
/// first export, where client records are kept: the records of the run
/// before, kept in the export that was first then, still let its clients
/// reclaim, and move to the new first export; that run's stateids still
/// read as stale.
#[test]
fn a_client_reclaims_after_a_new_first_export_appears() {
    let tmp = tempfile::tempdir().unwrap();
    let users = tmp.path().join("users");
    let mut server = serve_users(tmp.path(), &["warren"], &["--grace-time", "60"]);
    let mut c = Nfs4Client::connect(server.addr, "editor-mac").unwrap();
    let projects = c.lookup("warren/Projects").unwrap();
    let take = c
        .open(
            &projects,
            "take 1.mov",
            Create::Unchecked { mode: 0o644 },
            OPEN4_SHARE_ACCESS_BOTH,
        )
        .unwrap();
    drop(c);
    server.terminate();
    assert_eq!(sqlite_clients(&users.join("warren.sqlite")), 1);

    // "aaron" sorts before "warren": it is the first export now.
    demo_user(&users, "aaron");
    server.start_again();
    let mut back = Nfs4Client::connect(server.addr, "editor-mac").unwrap();
    assert_eq!(
        reclaim_open(&mut back, &take.fh),
        0,
        "the client of the run before reclaims its open:\n{}",
        server.log()
    );
    // A stateid of the run before reads as STALE (the client recovers),
    // not BAD, though the export that recorded that run is not first now.
    match back.read(&take, 0, 16) {
        Err(ClientError::Nfs(op::READ, status)) => assert_eq!(status, STALE_STATEID),
        other => panic!("READ with the run before's stateid: {other:?}"),
    }
    // A client the run before never saw may not reclaim.
    let mut stranger = Nfs4Client::connect(server.addr, "stranger").unwrap();
    assert_eq!(reclaim_open(&mut stranger, &take.fh), RECLAIM_BAD);
    drop((back, stranger));
    server.terminate();
    // The records moved to the first export: the one before holds none.
    assert_eq!(sqlite_clients(&users.join("warren.sqlite")), 0);
    assert!(sqlite_clients(&users.join("aaron.sqlite")) >= 1);
}
