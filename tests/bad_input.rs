//! Malformed and unexpected input on the wire: each gets its RPC or NFS
//! error, or the connection is closed for record-level damage, while a
//! second client on its own connection is served normally throughout.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use markbase_nfs::nfs4::consts::{attr, op, Status, NFS4_PROGRAM};
use markbase_nfs::rpc::message::ReplyStatus;
use markbase_nfs::tools::client::{compound, CompoundArgs, RpcClient};

struct Fixture {
    _tmp: tempfile::TempDir,
    server: Server,
    witness: RpcClient,
}

fn start() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("users/demo.sqlite");
    let server = Server::start(tmp.path(), &db, &tmp.path().join("storage"), 0);
    let witness = RpcClient::connect(server.addr).unwrap();
    Fixture {
        _tmp: tmp,
        server,
        witness,
    }
}

impl Fixture {
    /// The second client still gets correct answers.
    fn witness_is_served(&mut self) {
        let args = CompoundArgs::new()
            .putrootfh()
            .lookup("Projects")
            .getattr(&[attr::TYPE, attr::FILEID]);
        let (st, reply) = compound(&mut self.witness, &args, 0).expect("witness call");
        assert_eq!(st, ReplyStatus::Success);
        let reply = reply.expect("COMPOUND4res");
        assert_eq!(reply.status, 0, "witness COMPOUND failed");
        assert_eq!(reply.results, 3);
        assert!(self.server.is_running(), "server died");
    }

    fn fresh(&self) -> RpcClient {
        RpcClient::connect(self.server.addr).unwrap()
    }
}

fn closed_by_server(c: &mut RpcClient) -> bool {
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    matches!(c.read_record(), Ok(None) | Err(_))
}

fn record(payload: &[u8]) -> Vec<u8> {
    let mut v = (0x8000_0000u32 | payload.len() as u32)
        .to_be_bytes()
        .to_vec();
    v.extend_from_slice(payload);
    v
}

#[test]
fn record_level_damage_closes_only_that_connection() {
    let mut f = start();
    f.witness_is_served();

    // A record of pure garbage (not a call, not a reply).
    let mut c = f.fresh();
    c.send_raw(&record(&[0xab; 64])).unwrap();
    assert!(
        closed_by_server(&mut c),
        "garbage record: connection not closed"
    );
    f.witness_is_served();

    // A record shorter than its header says, then the client goes away.
    let mut c = f.fresh();
    let mut bytes = record(&[0u8; 100]);
    bytes.truncate(40);
    c.send_raw(&bytes).unwrap();
    c.stream().shutdown(std::net::Shutdown::Write).unwrap();
    assert!(
        closed_by_server(&mut c),
        "truncated record: connection not closed"
    );
    f.witness_is_served();

    // A 2 GiB fragment length: refused at once, nothing allocated.
    let mut c = f.fresh();
    c.send_raw(&0xffff_ffffu32.to_be_bytes()).unwrap();
    assert!(
        closed_by_server(&mut c),
        "2 GiB fragment: connection not closed"
    );
    f.witness_is_served();

    // A non-final fragment chain that grows past the limit.
    let mut c = f.fresh();
    let chunk = vec![0u8; 600 << 10];
    let mut frag = ((chunk.len() as u32).to_be_bytes()).to_vec();
    frag.extend_from_slice(&chunk);
    let _ = c.stream().write_all(&frag);
    let _ = c.stream().write_all(&frag);
    assert!(
        closed_by_server(&mut c),
        "oversized multi-fragment record: not closed"
    );
    f.witness_is_served();
    assert!(
        f.server.log().contains("exceeds the limit"),
        "oversize not logged"
    );

    // A WRITE whose megabyte stops a third of the way in (on Linux the
    // payload was on its way into a pipe), then the client goes away.
    let mut c = f.fresh();
    let call = write_call(1 << 20, 1 << 20);
    c.send_raw(&call[..call.len() - (700 << 10)]).unwrap();
    c.stream().shutdown(std::net::Shutdown::Write).unwrap();
    assert!(
        closed_by_server(&mut c),
        "WRITE cut short: connection not closed"
    );
    f.witness_is_served();

    // A WRITE whose data length claims more than its record holds: an
    // answer (the arguments do not decode), and the connection goes on.
    let mut c = f.fresh();
    c.send_raw(&write_call(1 << 20, 100 << 10)).unwrap();
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reply = c
        .read_record()
        .unwrap()
        .expect("a reply to the short WRITE");
    let (_, st, at) = markbase_nfs::rpc::message::decode_reply(&reply).unwrap();
    assert_eq!(st, ReplyStatus::Success);
    let res = markbase_nfs::tools::client::CompoundReply::decode(&reply[at..]).unwrap();
    assert_ne!(res.status, 0, "short WRITE succeeded");
    let (st, res) = compound(&mut c, &CompoundArgs::new().putrootfh().getfh(), 0).unwrap();
    assert_eq!((st, res.map(|r| r.status)), (ReplyStatus::Success, Some(0)));
    f.witness_is_served();
}

/// A whole WRITE call record (mark included) to a made-up file handle whose
/// data length field says `claimed` while `sent` bytes of data follow.
fn write_call(claimed: u32, sent: usize) -> Vec<u8> {
    use markbase_nfs::rpc::message::{encode_call, Credentials};
    use markbase_nfs::xdr::Encoder;
    let args = CompoundArgs::new().putfh(&[7u8; 16]).op(op::WRITE, |e| {
        e.fixed(&[0u8; 16]);
        e.u64(0);
        e.u32(0);
        e.u32(claimed);
        e.fixed(&vec![0x5a; sent]);
    });
    let mut e = Encoder::new();
    encode_call(&mut e, 77, NFS4_PROGRAM, 4, 1, &Credentials::None);
    e.buf.extend_from_slice(&args.encode("", 0));
    record(&e.buf)
}

#[test]
fn rpc_level_errors_get_their_replies() {
    let mut f = start();
    let mut c = f.fresh();
    // Unknown program (NLM: v3 clients mount with nolock/locallocks).
    assert_eq!(
        c.call(100_021, 4, 0, &[]).unwrap().0,
        ReplyStatus::ProgUnavail
    );
    // A version of the NFS program nobody serves: the range that is.
    assert_eq!(
        c.call(NFS4_PROGRAM, 2, 0, &[]).unwrap().0,
        ReplyStatus::ProgMismatch { low: 3, high: 4 }
    );
    // MOUNT version 4 (1 to 3 are served).
    assert_eq!(
        c.call(100_005, 4, 0, &[]).unwrap().0,
        ReplyStatus::ProgMismatch { low: 1, high: 3 }
    );
    // MOUNT version 1's MNT would hand out an NFSv2 handle.
    assert_eq!(
        c.call(100_005, 1, 1, &markbase_nfs::mount::mnt_args("/"))
            .unwrap()
            .0,
        ReplyStatus::ProcUnavail
    );
    // Unknown procedure.
    assert_eq!(
        c.call(NFS4_PROGRAM, 4, 7, &[]).unwrap().0,
        ReplyStatus::ProcUnavail
    );
    // COMPOUND whose arguments are not even a header.
    assert_eq!(
        c.call(NFS4_PROGRAM, 4, 1, &[0, 0, 0]).unwrap().0,
        ReplyStatus::GarbageArgs
    );
    // NULL works on the same connection afterwards.
    assert_eq!(
        c.call(NFS4_PROGRAM, 4, 0, &[]).unwrap().0,
        ReplyStatus::Success
    );
    // RPC version 3.
    let mut raw = vec![0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 3];
    raw.extend_from_slice(&NFS4_PROGRAM.to_be_bytes());
    raw.extend_from_slice(&[
        0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    c.send_raw(&record(&raw)).unwrap();
    let rec = c.read_record().unwrap().expect("reply");
    let (xid, st, _) = markbase_nfs::rpc::message::decode_reply(&rec).unwrap();
    assert_eq!((xid, st), (9, ReplyStatus::RpcMismatch { low: 2, high: 2 }));
    // An unsupported auth flavor (RPCSEC_GSS).
    let mut gss = raw.clone();
    gss[11] = 2;
    gss[24..28].copy_from_slice(&6u32.to_be_bytes());
    c.send_raw(&record(&gss)).unwrap();
    let rec = c.read_record().unwrap().expect("reply");
    let (_, st, _) = markbase_nfs::rpc::message::decode_reply(&rec).unwrap();
    assert!(matches!(st, ReplyStatus::AuthError(_)), "{st:?}");
    f.witness_is_served();
}

fn compound_status(
    c: &mut RpcClient,
    args: &CompoundArgs,
    minor: u32,
) -> (u32, u32, Option<(u32, u32)>) {
    let (st, reply) = compound(c, args, minor).unwrap();
    assert_eq!(st, ReplyStatus::Success);
    let r = reply.expect("COMPOUND4res");
    (r.status, r.results, r.first())
}

#[test]
fn nfs_level_errors_get_their_status() {
    let mut f = start();
    let mut c = f.fresh();
    // Unknown operation: OP_ILLEGAL as the result's opnum and status.
    let args = CompoundArgs::new().putrootfh().op(9999, |_| {});
    let (status, results, _) = compound_status(&mut c, &args, 0);
    assert_eq!((status, results), (Status::OpIllegal.code(), 2));
    let (st, reply) = compound(&mut c, &args, 0).unwrap();
    assert_eq!(st, ReplyStatus::Success);
    let body = reply.unwrap().body;
    assert_eq!(
        &body[body.len() - 8..],
        &[0, 0, 0x27, 0x3c, 0, 0, 0x27, 0x3c]
    );
    // Operation numbers 0-2 do not exist either.
    let args = CompoundArgs::new().op(1, |_| {});
    assert_eq!(
        compound_status(&mut c, &args, 0).0,
        Status::OpIllegal.code()
    );
    // Minor version 1 is not served.
    let args = CompoundArgs::new().putrootfh();
    assert_eq!(
        compound_status(&mut c, &args, 1),
        (Status::MinorVersMismatch.code(), 0, None)
    );
    // Bogus file handles.
    let args = CompoundArgs::new()
        .putfh(b"not a handle")
        .getattr(&[attr::TYPE]);
    assert_eq!(
        compound_status(&mut c, &args, 0).2,
        Some((op::PUTFH, Status::BadHandle.code()))
    );
    let args = CompoundArgs::new().putfh(&[]);
    assert_eq!(
        compound_status(&mut c, &args, 0).0,
        Status::BadHandle.code()
    );
    let mut unknown_node = b"MB\x01\x02\x00\x00\x00\x01".to_vec();
    unknown_node.extend_from_slice(b"no-such-node");
    let args = CompoundArgs::new().putfh(&unknown_node);
    assert_eq!(compound_status(&mut c, &args, 0).0, Status::Stale.code());
    // No current filehandle.
    let args = CompoundArgs::new().getattr(&[attr::TYPE]);
    assert_eq!(
        compound_status(&mut c, &args, 0).0,
        Status::NoFileHandle.code()
    );
    // Arguments cut short inside an operation.
    let args = CompoundArgs::new()
        .putrootfh()
        .op(op::LOOKUP, |e| e.u32(200));
    assert_eq!(compound_status(&mut c, &args, 0).0, Status::BadXdr.code());
    // Bad names.
    for (name, want) in [
        ("", Status::Inval),
        ("..", Status::BadName),
        ("a/b", Status::BadName),
        (&"x".repeat(300)[..], Status::NameTooLong),
        ("missing", Status::NoEnt),
    ] {
        let args = CompoundArgs::new().putrootfh().lookup(name);
        assert_eq!(
            compound_status(&mut c, &args, 0).0,
            want.code(),
            "name {name:?}"
        );
    }
    // Too many operations in one COMPOUND.
    let mut args = CompoundArgs::new();
    for _ in 0..1000 {
        args = args.putrootfh();
    }
    assert_eq!(compound_status(&mut c, &args, 0).0, Status::Resource.code());
    // Removing a folder that is not empty.
    let args = CompoundArgs::new()
        .putrootfh()
        .op(op::REMOVE, |e| e.string("Projects"));
    assert_eq!(compound_status(&mut c, &args, 0).0, Status::NotEmpty.code());
    f.witness_is_served();
}

#[test]
fn many_rpcs_in_flight_on_one_connection_all_get_replies() {
    let f = start();
    let mut c = f.fresh();
    let args = CompoundArgs::new().putrootfh().lookup("Projects").getfh();
    let body = args.encode("pipelined", 0);
    let mut xids = Vec::new();
    for _ in 0..200 {
        xids.push(c.send_call(NFS4_PROGRAM, 4, 1, &body).unwrap());
    }
    let mut seen = Vec::new();
    for _ in 0..200 {
        let rec = c.read_record().unwrap().expect("reply");
        let (xid, st, _) = markbase_nfs::rpc::message::decode_reply(&rec).unwrap();
        assert_eq!(st, ReplyStatus::Success);
        seen.push(xid);
    }
    seen.sort();
    assert_eq!(seen, xids);
    let _: SocketAddr = f.server.addr;
}

/// Every NFSv3 and MOUNT procedure, given no arguments, truncated ones,
/// junk and handles that are not ours: GARBAGE_ARGS or an NFS error (never
/// a success, never a panic), and the server serves on.
#[test]
fn nfsv3_and_mount_procedures_refuse_bad_arguments() {
    const NFS3: u32 = 100_003;
    const MOUNT: u32 = 100_005;
    let mut f = start();
    let mut c = f.fresh();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut junk = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect()
    };
    // A handle that is not ours, then plausible rest-of-arguments.
    let mut foreign = Vec::new();
    foreign.extend_from_slice(&32u32.to_be_bytes());
    foreign.extend_from_slice(&[0x42; 32]);
    foreign.extend_from_slice(&[0; 64]);
    for procedure in 1..=21u32 {
        let mut cases: Vec<Vec<u8>> = vec![Vec::new(), vec![0, 0, 0], foreign.clone()];
        for len in [4, 9, 40, 77, 300] {
            cases.push(junk(len));
        }
        for args in cases {
            let (st, body) = c.call(NFS3, 3, procedure, &args).unwrap();
            match st {
                ReplyStatus::GarbageArgs => {}
                ReplyStatus::Success => {
                    let status = u32::from_be_bytes(body[..4].try_into().unwrap());
                    assert_ne!(status, 0, "procedure {procedure} accepted {args:?}");
                }
                other => panic!("procedure {procedure}: {other:?}"),
            }
        }
    }
    // A handle not ours is BADHANDLE (GETATTR), not a crash or a STALE.
    let (_, body) = c.call(NFS3, 3, 1, &foreign[..36]).unwrap();
    assert_eq!(u32::from_be_bytes(body[..4].try_into().unwrap()), 10001);
    // MOUNT: a path too long, a path that names nothing, junk.
    let mut long = Vec::new();
    long.extend_from_slice(&2000u32.to_be_bytes());
    long.extend_from_slice(&[b'a'; 2000]);
    let (_, body) = c.call(MOUNT, 3, 1, &long).unwrap();
    assert_eq!(u32::from_be_bytes(body[..4].try_into().unwrap()), 63);
    let missing = markbase_nfs::mount::mnt_args("/no/such/folder");
    let (_, body) = c.call(MOUNT, 3, 1, &missing).unwrap();
    assert_eq!(u32::from_be_bytes(body[..4].try_into().unwrap()), 2);
    for procedure in [1u32, 3] {
        for args in [Vec::new(), junk(3), junk(50)] {
            let (st, _) = c.call(MOUNT, 3, procedure, &args).unwrap();
            assert!(
                matches!(st, ReplyStatus::GarbageArgs | ReplyStatus::Success),
                "MOUNT {procedure}: {st:?}"
            );
        }
    }
    assert_eq!(
        c.call(MOUNT, 3, 9, &[]).unwrap().0,
        ReplyStatus::ProcUnavail
    );
    assert_eq!(
        c.call(NFS3, 3, 22, &[]).unwrap().0,
        ReplyStatus::ProcUnavail
    );
    f.witness_is_served();
    // The same connection still mounts and reads.
    let (st, body) = c
        .call(MOUNT, 3, 1, &markbase_nfs::mount::mnt_args("/"))
        .unwrap();
    assert_eq!(st, ReplyStatus::Success);
    assert_eq!(&body[..4], &[0, 0, 0, 0]);
}

/// A client of its own, holding open (read and write) a new 1 MiB file
/// `name` in Projects.
fn open_mib_file(
    f: &Fixture,
    client: &str,
    name: &str,
) -> (
    markbase_nfs::tools::client::Nfs4Client,
    markbase_nfs::tools::client::OpenFile,
) {
    let mut c = markbase_nfs::tools::client::Nfs4Client::connect(f.server.addr, client).unwrap();
    let dir = c.lookup("Projects").unwrap();
    let file = c
        .open(
            &dir,
            name,
            markbase_nfs::tools::client::Create::Unchecked { mode: 0o644 },
            3,
        )
        .unwrap();
    c.write(&file, 0, &vec![0x5a; 1 << 20], 2).unwrap();
    (c, file)
}

/// Resident memory of process `pid`, in bytes (Linux).
#[cfg(target_os = "linux")]
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// A client that pipelines 512 READs of 1 MiB and never reads a reply must
/// not make the server hold its 512 MiB of replies: READs stop being taken
/// off the socket while the connection's replies wait to be sent (before:
/// each call's slot was freed when it finished, not when its reply went
/// out, and the server grew by the whole volume). A second client is
/// served meanwhile.
#[cfg(target_os = "linux")]
#[test]
fn a_client_that_never_reads_its_replies_cannot_grow_the_server() {
    let mut f = start();
    let (mut c, file) = open_mib_file(&f, "hoarder", "big.mov");
    // Warm: one READ answered, so pools and caches exist before measuring.
    assert_eq!(c.read(&file, 0, 1 << 20).unwrap().0.len(), 1 << 20);
    let pid = f.server.pid().unwrap();
    let before = rss_bytes(pid);

    let mut hoarder = f.fresh();
    hoarder
        .stream()
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let args = CompoundArgs::new().putfh(&file.fh).op(op::READ, |e| {
        e.u32(file.stateid.0);
        e.fixed(&file.stateid.1);
        e.u64(0);
        e.u32(1 << 20);
    });
    let call = args.encode("", 0);
    let sender = std::thread::spawn(move || {
        let mut sent = 0;
        for _ in 0..512 {
            // Blocks (then times out) once the server stops reading.
            if hoarder.send_call(NFS4_PROGRAM, 4, 1, &call).is_err() {
                break;
            }
            sent += 1;
        }
        (hoarder, sent)
    });
    std::thread::sleep(Duration::from_secs(4));
    let grown = rss_bytes(pid).saturating_sub(before);
    f.witness_is_served();
    let (_hoarder, sent) = sender.join().unwrap();
    assert!(
        grown < 64 << 20,
        "the server grew by {} MiB for a client that reads nothing ({sent} READs sent)",
        grown >> 20
    );
}

/// A COMPOUND of many 1 MiB READs: its reply stops at about one READ's
/// worth with NFS4ERR_RESOURCE (RFC 7530 §15.2) instead of growing with
/// every READ (before: 8 READs answered 8 MiB in one reply, which the
/// connection's reply budget, charged by the first READ, did not see).
#[test]
fn a_compound_of_many_reads_is_cut_short_with_resource() {
    let f = start();
    let (_c, file) = open_mib_file(&f, "greedy", "reel.mov");
    let mut args = CompoundArgs::new().putfh(&file.fh);
    for _ in 0..8 {
        args = args.op(op::READ, |e| {
            e.u32(file.stateid.0);
            e.fixed(&file.stateid.1);
            e.u64(0);
            e.u32(1 << 20);
        });
    }
    let mut rpc = f.fresh();
    let (st, body) = rpc.call(NFS4_PROGRAM, 4, 1, &args.encode("", 0)).unwrap();
    assert_eq!(st, ReplyStatus::Success);
    let mut d = markbase_nfs::xdr::Decoder::new(&body);
    assert_eq!(d.u32().unwrap(), Status::Resource.code());
    assert!(body.len() < 3 << 20, "a reply of {} bytes", body.len());
}

/// Junk in a loop: 300 connections each sending a garbage record, and 300
/// COMPOUNDs with too many operations on one connection. The log gets a
/// line or two for this client, not one per record (before: 600 WARN
/// lines), and the server keeps serving.
#[test]
fn junk_in_a_loop_costs_the_log_a_line_not_a_line_per_record() {
    let mut f = start();
    for _ in 0..300 {
        let mut c = f.fresh();
        c.send_raw(&record(&[0xab; 64])).unwrap();
        assert!(closed_by_server(&mut c));
    }
    let mut c = f.fresh();
    let mut args = CompoundArgs::new();
    for _ in 0..1000 {
        args = args.op(op::GETFH, |_| {});
    }
    for _ in 0..300 {
        let (st, reply) = compound(&mut c, &args, 0).unwrap();
        assert_eq!(st, ReplyStatus::Success);
        assert_eq!(reply.unwrap().status, Status::Resource.code());
    }
    f.witness_is_served();
    let log = f.server.log();
    let lines = log.lines().filter(|l| l.contains("WARN")).count();
    assert!(
        lines <= 4,
        "{lines} WARN lines for one client's junk:\n{}",
        log.lines()
            .filter(|l| l.contains("WARN"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        log.contains("at most one such line per client address a minute"),
        "the line says it is rate-limited"
    );
}
