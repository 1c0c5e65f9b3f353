//! NFSv4.0 state through the wire (server in-process, to read its
//! counters): locks across clients, bounded state after many cycles,
//! seqid replay and the duplicate request cache.

mod common;

use common::*;
use markbase_nfs::nfs4::consts::{op, Status, NFS4_PROGRAM};
use markbase_nfs::rpc::Credentials;
use markbase_nfs::tools::client::{CompoundArgs, Create, Nfs4Client, RpcClient};

const BOTH: u32 = 3;
const READ_LT: u32 = 1;
const WRITE_LT: u32 = 2;

#[test]
fn locks_conflict_across_clients_and_free_on_unlock() {
    let srv = InProcess::start();
    let mut a = Nfs4Client::connect(srv.addr, "client-a").unwrap();
    let mut b = Nfs4Client::connect(srv.addr, "client-b").unwrap();
    let root = a.lookup("").unwrap();
    let fa = a
        .open(
            &root,
            "project.prproj",
            Create::Unchecked { mode: 0o644 },
            BOTH,
        )
        .unwrap();
    let fb = b.open(&root, "project.prproj", Create::No, BOTH).unwrap();
    let la = a
        .lock(&fa, None, 0, WRITE_LT, 0, u64::MAX, b"a-lock")
        .unwrap();
    let err = b
        .lock(&fb, None, 0, READ_LT, 4096, 10, b"b-lock")
        .unwrap_err();
    assert_eq!(err.status(), Some(Status::Denied.code()));
    // LOCKT reports the holder's range.
    let denied = lockt_denied(&mut b, &fb.fh, WRITE_LT, 0, 1);
    assert_eq!(
        denied,
        (0, u64::MAX, WRITE_LT, a.clientid, b"a-lock".to_vec())
    );
    // Release: B's lock goes through (its seqid moved on with the DENIED).
    a.unlock(&fa, la, 1, 0, u64::MAX).unwrap();
    let lb = b.lock(&fb, None, 0, READ_LT, 4096, 10, b"b-lock").unwrap();
    // RELEASE_LOCKOWNER while holding: LOCKS_HELD.
    let err = b.release_lockowner(b"b-lock").unwrap_err();
    assert_eq!(err.status(), Some(Status::LocksHeld.code()));
    b.unlock(&fb, lb, 1, 0, u64::MAX).unwrap();
    b.release_lockowner(b"b-lock").unwrap();
    a.close(&fa).unwrap();
    b.close(&fb).unwrap();
}

#[test]
fn thousand_cycles_from_many_owners_leave_no_state() {
    let srv = InProcess::start();
    let mut clients: Vec<Nfs4Client> = (0..10)
        .map(|i| Nfs4Client::connect(srv.addr, &format!("cycler-{i}")).unwrap())
        .collect();
    let root = clients[0].lookup("").unwrap();
    for i in 0..1000u64 {
        let c = &mut clients[i as usize % 10];
        c.set_open_owner(&format!("open-owner-{i}"));
        let f = c
            .open(
                &root,
                &format!("shared-{}.bin", i % 5),
                Create::Unchecked { mode: 0o644 },
                BOTH,
            )
            .unwrap();
        let owner = format!("lock-owner-{i}");
        let l = c
            .lock(&f, None, 0, WRITE_LT, i * 16, 16, owner.as_bytes())
            .unwrap();
        c.unlock(&f, l, 1, i * 16, 16).unwrap();
        c.release_lockowner(owner.as_bytes()).unwrap();
        c.close(&f).unwrap();
    }
    let counts = srv.nfs.state_counts();
    assert_eq!(
        (
            counts.opens,
            counts.open_owners,
            counts.lock_owners,
            counts.lock_states,
            counts.locked_ranges
        ),
        (0, 0, 0, 0, 0),
        "{counts:?}"
    );
    assert!(counts.retired_owners <= 1024, "{counts:?}");
    assert_eq!(counts.clients, 10);
}

#[test]
fn a_retransmitted_close_gets_the_same_reply() {
    let srv = InProcess::start();
    let mut c = Nfs4Client::connect(srv.addr, "replay").unwrap();
    let root = c.lookup("").unwrap();
    let f = c
        .open(&root, "r.txt", Create::Unchecked { mode: 0o644 }, BOTH)
        .unwrap();
    // CLOSE by hand (seqid 3: OPEN=1, OPEN_CONFIRM=2), sent twice.
    let args = CompoundArgs::new().putfh(&f.fh).op(op::CLOSE, |e| {
        e.u32(3);
        e.u32(f.stateid.0);
        e.fixed(&f.stateid.1);
    });
    let first = c.compound(&args).unwrap();
    let again = c.compound(&args).unwrap();
    assert_eq!(first, again);
    let mut r = Nfs4Client::results(&again);
    r.next(op::PUTFH).unwrap();
    r.next(op::CLOSE).unwrap();
    // A seqid that is neither the last nor the next is BAD_SEQID.
    let args = CompoundArgs::new().putfh(&f.fh).op(op::CLOSE, |e| {
        e.u32(9);
        e.u32(f.stateid.0);
        e.fixed(&f.stateid.1);
    });
    let body = c.compound(&args).unwrap();
    let mut r = Nfs4Client::results(&body);
    r.next(op::PUTFH).unwrap();
    assert!(r.next(op::CLOSE).is_err());
}

/// Makes (and closes) `name` in the root as client `client`; returns the
/// COMPOUND that removes it, to send as raw calls.
fn new_file_and_its_remove(srv: &InProcess, client: &str, name: &str) -> Vec<u8> {
    let mut c = Nfs4Client::connect(srv.addr, client).unwrap();
    let root = c.lookup("").unwrap();
    let f = c
        .open(&root, name, Create::Unchecked { mode: 0o644 }, BOTH)
        .unwrap();
    c.close(&f).unwrap();
    CompoundArgs::new()
        .putfh(&root)
        .op(op::REMOVE, |e| e.string(name))
        .encode(client, 0)
}

#[test]
fn a_remove_retransmitted_after_reconnect_is_not_a_spurious_noent() {
    let srv = InProcess::start();
    let args = new_file_and_its_remove(&srv, "drc", "gone.txt");
    let mut first = RpcClient::connect(srv.addr).unwrap();
    first.set_next_xid(4242);
    let (_, reply1) = first.call(NFS4_PROGRAM, 4, 1, &args).unwrap();
    drop(first);
    let mut second = RpcClient::connect(srv.addr).unwrap();
    second.set_next_xid(4242);
    let (_, reply2) = second.call(NFS4_PROGRAM, 4, 1, &args).unwrap();
    assert_eq!(reply1, reply2);
    assert_eq!(&reply1[..4], &[0, 0, 0, 0], "REMOVE succeeded");
    // A new request (new xid) for the same name is NOENT, as it should be.
    let (_, reply3) = second.call(NFS4_PROGRAM, 4, 1, &args).unwrap();
    assert_eq!(
        u32::from_be_bytes(reply3[..4].try_into().unwrap()),
        Status::NoEnt.code()
    );
}

/// The duplicate request cache answers a retransmission of the same
/// caller only: another user (or machine) sending the same xid and
/// arguments gets its own answer.
#[test]
fn another_callers_request_with_the_same_xid_is_not_a_replay() {
    let srv = InProcess::start();
    let args = new_file_and_its_remove(&srv, "drc-two", "twice.txt");
    let status = |reply: &[u8]| u32::from_be_bytes(reply[..4].try_into().unwrap());
    let mut editor = RpcClient::connect(srv.addr).unwrap();
    editor.credentials = Credentials::sys("edit-bay-1", 501, 20, &[]);
    editor.set_next_xid(777);
    let (_, first) = editor.call(NFS4_PROGRAM, 4, 1, &args).unwrap();
    assert_eq!(status(&first), 0, "REMOVE succeeded");
    for (machine, uid) in [("edit-bay-1", 502), ("edit-bay-2", 501)] {
        let mut other = RpcClient::connect(srv.addr).unwrap();
        other.credentials = Credentials::sys(machine, uid, 20, &[]);
        other.set_next_xid(777);
        let (_, reply) = other.call(NFS4_PROGRAM, 4, 1, &args).unwrap();
        assert_eq!(status(&reply), Status::NoEnt.code(), "{machine} uid {uid}");
    }
}

/// RFC 7530 §9.2: one lock-owner's overlapping and adjacent locks of one
/// type are one lock; another owner's LOCKT reports the union.
#[test]
fn one_owners_overlapping_locks_show_as_their_union() {
    let srv = InProcess::start();
    let mut a = Nfs4Client::connect(srv.addr, "merge-a").unwrap();
    let mut b = Nfs4Client::connect(srv.addr, "merge-b").unwrap();
    let root = a.lookup("").unwrap();
    let fa = a
        .open(&root, "edl.txt", Create::Unchecked { mode: 0o644 }, BOTH)
        .unwrap();
    let fb = b.open(&root, "edl.txt", Create::No, BOTH).unwrap();
    let la = a.lock(&fa, None, 0, WRITE_LT, 0, 10, b"a-lock").unwrap();
    let la = a
        .lock(&fa, Some(la), 1, WRITE_LT, 5, 15, b"a-lock")
        .unwrap();
    a.lock(&fa, Some(la), 2, WRITE_LT, 20, 10, b"a-lock")
        .unwrap();
    let (offset, length, ..) = lockt_denied(&mut b, &fb.fh, READ_LT, 27, 1);
    assert_eq!((offset, length), (0, 30), "the union");
}

/// LOCKT by lock-owner "b-lock" of `c`, expected DENIED: the holder's
/// (offset, length, type, client id, owner).
fn lockt_denied(
    c: &mut Nfs4Client,
    fh: &[u8],
    locktype: u32,
    offset: u64,
    length: u64,
) -> (u64, u64, u32, u64, Vec<u8>) {
    let clientid = c.clientid;
    let args = CompoundArgs::new().putfh(fh).op(op::LOCKT, |e| {
        e.u32(locktype);
        e.u64(offset);
        e.u64(length);
        e.u64(clientid);
        e.string("b-lock");
    });
    let body = c.compound(&args).unwrap();
    let mut d = markbase_nfs::xdr::Decoder::new(&body);
    assert_eq!((d.u32().unwrap(), d.u32().unwrap()), (op::PUTFH, 0));
    assert_eq!(
        (d.u32().unwrap(), d.u32().unwrap()),
        (op::LOCKT, Status::Denied.code())
    );
    (
        d.u64().unwrap(),
        d.u64().unwrap(),
        d.u32().unwrap(),
        d.u64().unwrap(),
        d.opaque(100).unwrap().to_vec(),
    )
}

/// RFC 7530 §9.1.4: a stateid is its client's. Another client's connection
/// quoting it for WRITE or READ is refused (ACCESS) and the file keeps its
/// bytes; the owner's own I/O, and a new connection that has not yet said
/// whom it acts for (a client reconnecting), go through.
#[test]
fn another_clients_stateid_is_refused_for_io() {
    let srv = InProcess::start();
    let mut a = Nfs4Client::connect(srv.addr, "stateid-owner").unwrap();
    let mut b = Nfs4Client::connect(srv.addr, "stateid-thief").unwrap();
    let root = a.lookup("").unwrap();
    let fa = a
        .open(&root, "grade.drp", Create::Unchecked { mode: 0o644 }, BOTH)
        .unwrap();
    a.write(&fa, 0, b"owner's bytes", 2).unwrap();
    // B has its own open of another file, so its connection acts for B.
    let fb = b
        .open(&root, "other.drp", Create::Unchecked { mode: 0o644 }, BOTH)
        .unwrap();
    let err = b.write(&fa, 0, b"thief's bytes", 2).unwrap_err();
    assert_eq!(err.status(), Some(Status::Access.code()));
    let err = b.read(&fa, 0, 64).unwrap_err();
    assert_eq!(err.status(), Some(Status::Access.code()));
    assert_eq!(a.read(&fa, 0, 64).unwrap().0, b"owner's bytes");
    // A's stateid on a new connection that has not spoken yet: served.
    let mut fresh = RpcClient::connect(srv.addr).unwrap();
    let args = Nfs4Client::write_args(&fa, 8, b"BYTES", 2);
    let (_, reply) = markbase_nfs::tools::client::compound(&mut fresh, &args, 0).unwrap();
    assert_eq!(reply.unwrap().status, Status::Ok.code());
    assert_eq!(a.read(&fa, 0, 64).unwrap().0, b"owner's BYTES");
    b.close(&fb).unwrap();
    a.close(&fa).unwrap();
}
