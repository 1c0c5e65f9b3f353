//! SIGTERM while calls are in flight: the server stops reading calls,
//! answers every call it has read, then flushes and exits cleanly.

mod common;

use std::time::Duration;

use common::*;
use markbase_nfs::nfs4::consts::{attr, NFS4_PROGRAM, OPEN4_SHARE_ACCESS_BOTH};
use markbase_nfs::rpc::message::{decode_reply, ReplyStatus};
use markbase_nfs::tools::client::{CompoundArgs, Create, Nfs4Client};

const MIB: usize = 1 << 20;
const FILE_SYNC4: u32 = 2;
const UNSTABLE4: u32 = 0;

#[test]
fn sigterm_answers_every_call_already_read_then_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("demo.sqlite");
    let storage = tmp.path().join("storage");
    let mut server = Server::start(tmp.path(), &db, &storage, 0);
    writes_read_before_a_sigterm_are_answered_and_kept(&mut server, "Projects", FILE_SYNC4);
}

/// The same with several exports (`serve --users`), writing to the second:
/// every export's queued writes and catalog are flushed at the stop.
#[test]
fn sigterm_flushes_every_export() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = serve_users(tmp.path(), &["accusys", "warren"], &["--grace-time", "4"]);
    // UNSTABLE: answered once queued for the disk, written at the stop.
    writes_read_before_a_sigterm_are_answered_and_kept(&mut server, "warren/Projects", UNSTABLE4);
}

/// 96 WRITEs (`stable`) into a new file of the folder at `dir_path`, a
/// SIGTERM once all are read: each answered once, a clean exit, and after
/// a restart the whole file, byte for byte.
fn writes_read_before_a_sigterm_are_answered_and_kept(
    server: &mut Server,
    dir_path: &str,
    stable: u32,
) {
    let mut c = Nfs4Client::connect(server.addr, "stopping").unwrap();
    let dir = c.lookup(dir_path).unwrap();
    let f = c
        .open(
            &dir,
            "last take.mov",
            Create::Unchecked { mode: 0o644 },
            OPEN4_SHARE_ACCESS_BOTH,
        )
        .unwrap();

    // 96 FILE_SYNC WRITEs of 1 MiB (each synced on its own: in flight for
    // a while), then a GETATTR. Records are read in order and a GETATTR
    // runs apart from WRITEs: once its answer is in, every WRITE has been
    // read, and most are still running. Then the signal.
    const WRITES: usize = 96;
    let data = vec![0x5au8; MIB];
    let mut xids = Vec::new();
    for i in 0..WRITES {
        let args = Nfs4Client::write_args(&f, (i * MIB) as u64, &data, stable).encode("", 0);
        xids.push(c.rpc.send_call(NFS4_PROGRAM, 4, 1, &args).unwrap());
    }
    let marker = CompoundArgs::new()
        .putfh(&f.fh)
        .getattr(&[attr::SIZE])
        .encode("", 0);
    let marker = c.rpc.send_call(NFS4_PROGRAM, 4, 1, &marker).unwrap();
    c.rpc
        .stream()
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut answered = Vec::new();
    loop {
        let rec = c.rpc.read_record().unwrap().expect("reply");
        let (xid, ..) = decode_reply(&rec).unwrap();
        answered.push((xid, rec));
        if xid == marker {
            break;
        }
    }
    let before = answered.len() - 1;
    server.signal_term();
    while let Ok(Some(rec)) = c.rpc.read_record() {
        let (xid, ..) = decode_reply(&rec).unwrap();
        answered.push((xid, rec));
    }
    let status = server
        .wait_exit(Duration::from_secs(60))
        .expect("the server did not exit within 60 s of SIGTERM");
    let log = server.log();
    assert!(status.success(), "exit {status:?}:\n{log}");
    assert!(
        log.contains("stopping: no new connections or calls"),
        "{log}"
    );
    eprintln!("{before} of {WRITES} WRITEs were answered before the signal");
    let mut got: Vec<u32> = answered.iter().map(|(x, _)| *x).collect();
    got.sort();
    let mut want = xids.clone();
    want.push(marker);
    want.sort();
    assert_eq!(
        got, want,
        "every call read before the stop is answered, once"
    );
    for (xid, rec) in &answered {
        let (_, st, at) = decode_reply(rec).unwrap();
        assert_eq!(st, ReplyStatus::Success);
        assert_eq!(&rec[at..at + 4], &[0, 0, 0, 0], "call {xid} failed");
    }

    // What was answered is there after a restart: the size the catalog
    // flushed at the stop covers every answered WRITE.
    server.start_again();

    let mut c = Nfs4Client::connect(server.addr, "after").unwrap();

    let fh = c.lookup(&format!("{dir_path}/last take.mov")).unwrap();
    assert_eq!(size_of(&mut c, &fh), (WRITES * MIB) as u64);
    let dir = c.lookup(dir_path).unwrap();
    // Opens wait out the restart's grace period (GRACE until it ends).
    let mut opened = None;
    assert!(wait_until(Duration::from_secs(120), || {
        let r = c.open(&dir, "last take.mov", Create::No, OPEN4_SHARE_ACCESS_BOTH);
        opened = r.ok();
        opened.is_some()
    }));
    let f = opened.unwrap();
    for i in 0..WRITES {
        let (got, _) = c.read(&f, (i * MIB) as u64, MIB as u32).unwrap();
        assert!(got == data, "MiB {i} of the file differs after the restart");
    }
}
