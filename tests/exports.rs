//! Who may use the export and what they may do, over the wire: a machine
//! not in `export.clients` is refused by NFSv4, NFSv3 and MOUNT alike,
//! `export.secure` serves privileged source ports only, and a read-only
//! export serves reads and answers every change with ROFS. The same rules
//! with real clients on other addresses are in `exports_netns.rs`.

mod common;

use common::*;
use markbase_nfs::mount::{mnt_args, MOUNT_PROGRAM, MOUNT_V3};
use markbase_nfs::nfs3::{proc3, NFS3_PROGRAM, NFS3_VERSION};
use markbase_nfs::nfs4::consts::{
    attr, op, Status, ACCESS4_DELETE, ACCESS4_EXTEND, ACCESS4_LOOKUP, ACCESS4_MODIFY, ACCESS4_READ,
    OPEN4_SHARE_ACCESS_READ, OPEN4_SHARE_ACCESS_WRITE,
};
use markbase_nfs::rpc::message::ReplyStatus;
use markbase_nfs::tools::client::{compound, CompoundArgs, Create, Nfs4Client, RpcClient};
use markbase_nfs::xdr::Decoder;

const NFS3ERR_ACCES: u32 = 13;
const NFS3ERR_ROFS: u32 = 30;
const MNT3ERR_ACCES: u32 = 13;

/// The NFSv3 handle of the export's root, as MOUNT gives it to a machine
/// it serves (read from the server itself for a refused one).
fn root_fh3(srv: &InProcess) -> Vec<u8> {
    let export = srv.nfs.export();
    export
        .handle_within(&export.catalog().root(), 64)
        .expect("root handle")
}

/// The nfsstat3 (or mountstat3) that opens a result.
fn v3_status(c: &mut RpcClient, prog: u32, vers: u32, procedure: u32, args: &[u8]) -> u32 {
    let (st, body) = c.call(prog, vers, procedure, args).expect("call");
    assert_eq!(st, ReplyStatus::Success, "procedure {procedure}");
    Decoder::new(&body).u32().expect("status word")
}

#[test]
fn a_machine_not_in_the_client_list_is_refused_by_every_program() {
    // The server listens on loopback, but serves only 10.0.0.0/8: the
    // test's own connections, from 127.0.0.1, are a foreign machine's.
    let srv = InProcess::start_with(|cfg| cfg.export.clients = vec!["10.0.0.0/8".into()]);
    let mut c = RpcClient::connect(srv.addr).unwrap();

    // NULL pings are answered (clients probe with them before mounting).
    let (st, _) = c
        .call(NFS3_PROGRAM, NFS3_VERSION, proc3::NULL, &[])
        .unwrap();
    assert_eq!(st, ReplyStatus::Success);

    // NFSv4: the first operation answers ACCESS, the mount fails at once.
    let args = CompoundArgs::new().putrootfh().getfh();
    let (st, reply) = compound(&mut c, &args, 0).unwrap();
    assert_eq!(st, ReplyStatus::Success);
    let reply = reply.expect("COMPOUND4res");
    assert_eq!(reply.status, Status::Access.code());
    assert_eq!(reply.first(), Some((op::PUTROOTFH, Status::Access.code())));
    assert_eq!(reply.results, 1);
    let e = Nfs4Client::connect(srv.addr, "foreign").map(|_| ());
    assert_eq!(status_of(e), Status::Access.code(), "SETCLIENTID");

    // NFSv3, even with a handle that names the root.
    let root = root_fh3(&srv);
    let s = v3_status(
        &mut c,
        NFS3_PROGRAM,
        NFS3_VERSION,
        proc3::GETATTR,
        &fh_args(&root),
    );
    assert_eq!(s, NFS3ERR_ACCES, "GETATTR");
    let s = v3_status(
        &mut c,
        NFS3_PROGRAM,
        NFS3_VERSION,
        proc3::LOOKUP,
        &dirop_args(&root, "Projects"),
    );
    assert_eq!(s, NFS3ERR_ACCES, "LOOKUP");

    // MOUNT: MNT refused; EXPORT tells the machine who is served.
    let s = v3_status(&mut c, MOUNT_PROGRAM, MOUNT_V3, 1, &mnt_args("/"));
    assert_eq!(s, MNT3ERR_ACCES, "MNT");
    let (_, body) = c.call(MOUNT_PROGRAM, MOUNT_V3, 5, &[]).unwrap();
    let mut d = Decoder::new(&body);
    assert!(d.bool().unwrap());
    assert_eq!(d.opaque(1024).unwrap(), b"/");
    assert!(d.bool().unwrap(), "EXPORT lists no groups");
    assert_eq!(d.opaque(1024).unwrap(), b"10.0.0.0/8");
}

#[test]
fn a_listed_machine_is_served() {
    let srv = InProcess::start_with(|cfg| {
        cfg.export.clients = vec!["10.0.0.0/8".into(), "127.0.0.0/8".into()]
    });
    let mut c = Nfs4Client::connect(srv.addr, "listed").unwrap();
    assert!(!c.lookup("Projects").unwrap().is_empty());
    let mut rpc = RpcClient::connect(srv.addr).unwrap();
    let s = v3_status(&mut rpc, MOUNT_PROGRAM, MOUNT_V3, 1, &mnt_args("/"));
    assert_eq!(s, 0, "MNT");
}

/// A connection from `port` on 127.0.0.1 (a privileged one needs root).
fn connect_from(port: u16, to: std::net::SocketAddr) -> std::io::Result<RpcClient> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    s.connect_timeout(&to.into(), std::time::Duration::from_secs(5))?;
    RpcClient::over(s.into())
}

#[test]
fn secure_serves_privileged_source_ports_only() {
    let srv = InProcess::start_with(|cfg| {
        cfg.export.clients = vec!["127.0.0.1".into()];
        cfg.export.secure = true;
    });
    let args = CompoundArgs::new().putrootfh().getfh();
    let mut c = RpcClient::connect(srv.addr).unwrap();
    assert!(c.stream().local_addr().unwrap().port() >= 1024);
    let (_, reply) = compound(&mut c, &args, 0).unwrap();
    assert_eq!(reply.unwrap().status, Status::Access.code());

    // Root may bind a port below 1024, as kernel clients do.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: the privileged-port half of this test is skipped");
        return;
    }
    let mut c = (600..1024)
        .find_map(|p| connect_from(p, srv.addr).ok())
        .expect("no free privileged port");
    let (_, reply) = compound(&mut c, &args, 0).unwrap();
    assert_eq!(reply.unwrap().status, 0, "privileged port refused");
}

#[test]
fn a_read_only_export_serves_reads_and_refuses_every_change() {
    let srv = InProcess::start_with(|cfg| cfg.export.read_only = true);
    let mut c = Nfs4Client::connect(srv.addr, "reader").unwrap();
    let projects = c.lookup("Projects").unwrap();

    // Reads work.
    let f = c
        .open(&projects, "README.txt", Create::No, OPEN4_SHARE_ACCESS_READ)
        .unwrap();
    let (data, eof) = c.read(&f, 0, 4096).unwrap();
    assert!(eof && data.starts_with(b"This volume is a MarkBase catalog"));
    c.close(&f).unwrap();

    // Every change answers ROFS.
    let rofs = Status::RoFs.code();
    let e = c.open(
        &projects,
        "README.txt",
        Create::No,
        OPEN4_SHARE_ACCESS_WRITE,
    );
    assert_eq!(status_of(e), rofs, "OPEN for writing");
    let e = c.open(
        &projects,
        "new.mov",
        Create::Unchecked { mode: 0o644 },
        OPEN4_SHARE_ACCESS_READ,
    );
    assert_eq!(status_of(e), rofs, "OPEN with create");
    assert_eq!(status_of(c.remove(&projects, "README.txt")), rofs, "REMOVE");
    let e = c.rename(&projects, "README.txt", &projects, "READ ME.txt");
    assert_eq!(status_of(e), rofs, "RENAME");
    let mkdir = CompoundArgs::new().putfh(&projects).op(op::CREATE, |e| {
        e.u32(2); // NF4DIR
        e.string("Cuts");
        e.u32(0); // empty bitmap
        e.u32(0); // no attribute values
    });
    assert_eq!(
        status_of_ops(&mut c, &mkdir, &[op::PUTFH, op::CREATE]),
        rofs
    );
    let readme = c.lookup("Projects/README.txt").unwrap();
    let setattr = CompoundArgs::new().putfh(&readme).op(op::SETATTR, |e| {
        e.u32(0);
        e.fixed(&[0; 12]);
        markbase_nfs::nfs4::attrs::Bitmap::of(&[attr::SIZE]).encode(e);
        e.u32(8);
        e.u64(0);
    });
    assert_eq!(
        status_of_ops(&mut c, &setattr, &[op::PUTFH, op::SETATTR]),
        rofs
    );
    assert!(
        c.lookup("Projects/README.txt").is_ok(),
        "the file is still there"
    );

    // ACCESS grants no change, so the Finder shows the volume read-only.
    let want = ACCESS4_READ | ACCESS4_LOOKUP | ACCESS4_MODIFY | ACCESS4_EXTEND | ACCESS4_DELETE;
    let body = c
        .compound(
            &CompoundArgs::new()
                .putfh(&projects)
                .op(op::ACCESS, |e| e.u32(want)),
        )
        .unwrap();
    let mut r = Nfs4Client::results(&body);
    r.next(op::PUTFH).unwrap();
    let d = r.next(op::ACCESS).unwrap();
    assert_eq!(d.u32().unwrap(), want, "supported");
    assert_eq!(d.u32().unwrap(), ACCESS4_READ | ACCESS4_LOOKUP, "granted");

    // NFSv3 alike.
    let mut rpc = RpcClient::connect(srv.addr).unwrap();
    let root = root_fh3(&srv);
    let s = v3_status(
        &mut rpc,
        NFS3_PROGRAM,
        NFS3_VERSION,
        proc3::REMOVE,
        &dirop_args(&root, "Library"),
    );
    assert_eq!(s, NFS3ERR_ROFS, "REMOVE");
    let mut create = dirop_args(&root, "new.mov");
    create.extend_from_slice(&0u32.to_be_bytes()); // UNCHECKED
    create.extend_from_slice(&[0; 24]); // sattr3: nothing set
    let s = v3_status(&mut rpc, NFS3_PROGRAM, NFS3_VERSION, proc3::CREATE, &create);
    assert_eq!(s, NFS3ERR_ROFS, "CREATE");
    let s = v3_status(
        &mut rpc,
        NFS3_PROGRAM,
        NFS3_VERSION,
        proc3::GETATTR,
        &fh_args(&root),
    );
    assert_eq!(s, 0, "GETATTR");
}
