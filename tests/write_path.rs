//! The write path at the protocol level, with the server in-process so its
//! counters can be read: WRITE runs no SQL, names are checked, open modes
//! and create modes behave per RFC 7530.

mod common;

use common::*;
use markbase_nfs::catalog::NodeId;
use markbase_nfs::nfs4::consts::{op, Status};
use markbase_nfs::tools::client::{CompoundArgs, Create, Nfs4Client};

const READ: u32 = 1;
const WRITE: u32 = 2;
const BOTH: u32 = 3;

fn db_size(db: &std::path::Path, label: &str) -> Option<i64> {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT file_size FROM file_nodes WHERE label = ?1",
        [label],
        |r| r.get(0),
    )
    .ok()
}

#[test]
fn write_stream_runs_no_sql_and_the_writer_records_the_size_later() {
    let srv = InProcess::start();
    let db = srv.dir.path().join("users/demo.sqlite");
    let mut c = Nfs4Client::connect(srv.addr, "nosql").unwrap();
    let root = c.lookup("").unwrap();
    let f = c
        .open(&root, "render.mov", Create::Unchecked { mode: 0o644 }, BOTH)
        .unwrap();
    let catalog = srv.nfs.catalog();
    catalog.flush().unwrap();
    let reads_before = catalog.statements_run();
    let chunk = vec![0x5au8; 64 << 10];
    for i in 0..160u64 {
        let w = c.write(&f, i * chunk.len() as u64, &chunk, 0).unwrap();
        assert_eq!(w.count as usize, chunk.len());
        assert_eq!(w.verifier, srv.nfs.write_verifier());
    }
    assert_eq!(
        catalog.statements_run(),
        reads_before,
        "the WRITE path ran SQL on a request thread"
    );
    let written = 160 * chunk.len() as i64;
    // Memory knows at once; SQLite learns from the background writer.
    let node = catalog
        .lookup(&NodeId::Root, "render.mov")
        .unwrap()
        .unwrap();
    assert_eq!(node.size(), written as u64);
    let writes_before = catalog
        .writer_stats()
        .transactions
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(wait_until(std::time::Duration::from_secs(10), || db_size(
        &db,
        "render.mov"
    ) == Some(
        written
    )));
    assert!(
        catalog
            .writer_stats()
            .transactions
            .load(std::sync::atomic::Ordering::Relaxed)
            > writes_before
    );
    c.commit(&f.fh).unwrap();
    c.close(&f).unwrap();
    let path = node.meta().content.clone().unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), written as u64);
    assert_eq!(srv.nfs.state_counts().opens, 0);
    assert_eq!(
        catalog.pinned(),
        (0, 0),
        "nothing left waiting for the writer"
    );
}

#[test]
fn bad_names_create_nothing() {
    let srv = InProcess::start();
    let mut c = Nfs4Client::connect(srv.addr, "names").unwrap();
    let root = c.lookup("").unwrap();
    let before = srv
        .nfs
        .catalog()
        .listing(&NodeId::Root)
        .unwrap()
        .read()
        .len();
    let long = "n".repeat(256);
    let cases: Vec<(&[u8], Status)> = vec![
        (b"", Status::Inval),
        (b".", Status::BadName),
        (b"..", Status::BadName),
        (b"a/b", Status::BadName),
        (b"a\0b", Status::BadName),
        (long.as_bytes(), Status::NameTooLong),
        (b"caf\xe9", Status::Inval),
    ];
    for (name, want) in &cases {
        // CREATE of a folder
        let args = CompoundArgs::new().putfh(&root).op(op::CREATE, |e| {
            e.u32(2);
            e.opaque(name);
            e.u32(0);
            e.u32(0);
        });
        let body = c.compound(&args).unwrap();
        let mut r = Nfs4Client::results(&body);
        r.next(op::PUTFH).unwrap();
        let err = r.next(op::CREATE).err().and_then(|e| e.status());
        assert_eq!(err, Some(want.code()), "CREATE {name:?}");
        // RENAME onto it
        let args = CompoundArgs::new()
            .putfh(&root)
            .op(op::SAVEFH, |_| {})
            .putfh(&root)
            .op(op::RENAME, |e| {
                e.string("Library");
                e.opaque(name);
            });
        let body = c.compound(&args).unwrap();
        let mut r = Nfs4Client::results(&body);
        r.next(op::PUTFH).unwrap();
        r.next(op::SAVEFH).unwrap();
        r.next(op::PUTFH).unwrap();
        let err = r.next(op::RENAME).err().and_then(|e| e.status());
        assert_eq!(err, Some(want.code()), "RENAME to {name:?}");
    }
    // OPEN-create with a bad name (the kernel client cannot even send one).
    let err = c
        .open(&root, "x/y", Create::Unchecked { mode: 0o644 }, BOTH)
        .unwrap_err();
    assert_eq!(err.status(), Some(Status::BadName.code()));
    let after = srv
        .nfs
        .catalog()
        .listing(&NodeId::Root)
        .unwrap()
        .read()
        .len();
    assert_eq!(before, after, "a bad name created something");
    // AppleDouble and .DS_Store are ordinary names.
    for name in ["._clip.mov", ".DS_Store"] {
        let f = c
            .open(&root, name, Create::Unchecked { mode: 0o644 }, BOTH)
            .unwrap();
        c.write(&f, 0, b"resource fork", 2).unwrap();
        c.close(&f).unwrap();
    }
    assert_eq!(
        srv.nfs
            .catalog()
            .listing(&NodeId::Root)
            .unwrap()
            .read()
            .len(),
        before + 2
    );
}

#[test]
fn write_through_a_read_only_open_is_refused() {
    let srv = InProcess::start();
    let mut c = Nfs4Client::connect(srv.addr, "ro").unwrap();
    let dir = c.lookup("Projects").unwrap();
    let f = c.open(&dir, "README.txt", Create::No, READ).unwrap();
    let err = c.write(&f, 0, b"nope", 2).unwrap_err();
    assert_eq!(err.status(), Some(Status::OpenMode.code()));
    let (data, _) = c.read(&f, 0, 100).unwrap();
    assert!(data.starts_with(b"This volume"));
    c.close(&f).unwrap();
    // A closed stateid no longer writes.
    let err = c.write(&f, 0, b"nope", 2).unwrap_err();
    assert_eq!(err.status(), Some(Status::BadStateId.code()));
    // Write-only opens cannot be written through a different file's stateid.
    let w = c
        .open(&dir, "new.txt", Create::Guarded { mode: 0o600 }, WRITE)
        .unwrap();
    let mut other = w.clone();
    other.fh = c.lookup("Projects/README.txt").unwrap();
    let err = c.write(&other, 0, b"nope", 2).unwrap_err();
    assert_eq!(err.status(), Some(Status::BadStateId.code()));
    c.close(&w).unwrap();
}

#[test]
fn create_modes_follow_the_rfc() {
    let srv = InProcess::start();
    let mut c = Nfs4Client::connect(srv.addr, "modes").unwrap();
    let root = c.lookup("").unwrap();
    let f = c
        .open(&root, "g", Create::Guarded { mode: 0o640 }, BOTH)
        .unwrap();
    c.write(&f, 0, b"0123456789", 2).unwrap();
    c.close(&f).unwrap();
    let err = c
        .open(&root, "g", Create::Guarded { mode: 0o640 }, BOTH)
        .unwrap_err();
    assert_eq!(err.status(), Some(Status::Exist.code()));
    // UNCHECKED on an existing file opens it (content kept).
    let f = c
        .open(&root, "g", Create::Unchecked { mode: 0o600 }, READ)
        .unwrap();
    assert_eq!(c.read(&f, 0, 100).unwrap().0, b"0123456789");
    c.close(&f).unwrap();
    // EXCLUSIVE: a retransmission with the same verifier succeeds once
    // created; another verifier is EXIST.
    let v = *b"verif-01";
    let f = c.open(&root, "x", Create::Exclusive(v), BOTH).unwrap();
    c.close(&f).unwrap();
    let f = c.open(&root, "x", Create::Exclusive(v), BOTH).unwrap();
    c.close(&f).unwrap();
    let err = c
        .open(&root, "x", Create::Exclusive(*b"verif-02"), BOTH)
        .unwrap_err();
    assert_eq!(err.status(), Some(Status::Exist.code()));
    // Opening a folder is ISDIR; a missing file without create is NOENT.
    let err = c.open(&root, "Projects", Create::No, READ).unwrap_err();
    assert_eq!(err.status(), Some(Status::IsDir.code()));
    let err = c.open(&root, "missing", Create::No, READ).unwrap_err();
    assert_eq!(err.status(), Some(Status::NoEnt.code()));
    // The server kept serving, and state is clean.
    assert_eq!(srv.nfs.state_counts().opens, 0);
}

fn setattr(
    c: &mut Nfs4Client,
    fh: &[u8],
    stateid: (u32, [u8; 12]),
    attrs: &[u32],
    values: &[u8],
) -> Result<(), u32> {
    let b = markbase_nfs::nfs4::attrs::Bitmap::of(attrs);
    let args = CompoundArgs::new().putfh(fh).op(op::SETATTR, |e| {
        e.u32(stateid.0);
        e.fixed(&stateid.1);
        b.encode(e);
        e.opaque(values);
    });
    let body = c.compound(&args).unwrap();
    let mut r = Nfs4Client::results(&body);
    r.next(op::PUTFH).unwrap();
    r.next(op::SETATTR)
        .map(|_| ())
        .map_err(|e| e.status().unwrap())
}

#[test]
fn large_offsets_setattr_and_unsupported_types() {
    use markbase_nfs::nfs4::consts::attr;
    let srv = InProcess::start();
    let mut c = Nfs4Client::connect(srv.addr, "attrs").unwrap();
    let root = c.lookup("").unwrap();
    let f = c
        .open(&root, "huge.mov", Create::Unchecked { mode: 0o644 }, BOTH)
        .unwrap();
    // Past 4 GiB: 64-bit offsets end to end.
    let at = (5u64 << 30) + 123;
    c.write(&f, at, b"tail", 2).unwrap();
    assert_eq!(
        getattr(&mut c, &f.fh, &[attr::SIZE]),
        (at + 4).to_be_bytes()
    );
    assert_eq!(c.read(&f, at, 100).unwrap(), (b"tail".to_vec(), true));
    // Truncate through SETATTR with the open stateid.
    setattr(
        &mut c,
        &f.fh,
        f.stateid,
        &[attr::SIZE],
        &10u64.to_be_bytes(),
    )
    .unwrap();
    assert_eq!(getattr(&mut c, &f.fh, &[attr::SIZE]), 10u64.to_be_bytes());
    let node = srv
        .nfs
        .catalog()
        .lookup(&NodeId::Root, "huge.mov")
        .unwrap()
        .unwrap();
    let path = node.meta().content.clone().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 10);
    // Mode and a client-chosen mtime.
    let anon = (0, [0u8; 12]);
    setattr(&mut c, &f.fh, anon, &[attr::MODE], &0o600u32.to_be_bytes()).unwrap();
    assert_eq!(
        getattr(&mut c, &f.fh, &[attr::MODE]),
        0o600u32.to_be_bytes()
    );
    let mut t = vec![0, 0, 0, 1];
    t.extend_from_slice(&1_600_000_000i64.to_be_bytes());
    t.extend_from_slice(&5u32.to_be_bytes());
    setattr(&mut c, &f.fh, anon, &[54], &t).unwrap();
    let mut want = 1_600_000_000i64.to_be_bytes().to_vec();
    want.extend_from_slice(&5u32.to_be_bytes());
    assert_eq!(getattr(&mut c, &f.fh, &[attr::TIME_MODIFY]), want);
    // Owner change by root with no squash.
    let mut owner = vec![0, 0, 0, 4];
    owner.extend_from_slice(b"1000");
    setattr(&mut c, &f.fh, anon, &[attr::OWNER], &owner).unwrap();
    assert_eq!(getattr(&mut c, &f.fh, &[attr::OWNER]), owner);
    // A read-only attribute is INVAL, an unknown one ATTRNOTSUPP.
    assert_eq!(
        setattr(&mut c, &f.fh, anon, &[attr::TYPE], &1u32.to_be_bytes()),
        Err(Status::Inval.code())
    );
    assert_eq!(
        setattr(&mut c, &f.fh, anon, &[12], &0u32.to_be_bytes()),
        Err(Status::AttrNotSupp.code())
    );
    c.close(&f).unwrap();
    // Everything persisted: sizes, mode, mtime survive in the catalog.
    srv.nfs.catalog().flush().unwrap();
    let db = rusqlite::Connection::open(srv.dir.path().join("users/demo.sqlite")).unwrap();
    let (size, mode): (i64, i64) = db
        .query_row(
            "SELECT f.file_size, a.mode FROM file_nodes f JOIN markbase_nfs_attrs a ON a.node_id = f.node_id WHERE f.label = 'huge.mov'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((size, mode), (10, 0o600));
    // Hard links cannot be held: a node has one place (README).
    let file = c.lookup("huge.mov").unwrap();
    let args = CompoundArgs::new()
        .putfh(&file)
        .op(op::SAVEFH, |_| {})
        .putfh(&root)
        .op(op::LINK, |e| e.string("hard"));
    let body = c.compound(&args).unwrap();
    let mut r = Nfs4Client::results(&body);
    r.next(op::PUTFH).unwrap();
    r.next(op::SAVEFH).unwrap();
    r.next(op::PUTFH).unwrap();
    assert_eq!(
        r.next(op::LINK).err().and_then(|e| e.status()),
        Some(Status::MLink.code())
    );
    assert_eq!(
        getattr(&mut c, &file, &[attr::NUMLINKS]),
        1u32.to_be_bytes()
    );
}

#[test]
fn squashed_callers_cannot_change_owners() {
    use markbase_nfs::nfs4::consts::attr;
    let srv = InProcess::start_with(|cfg| cfg.export.squash = "root".into());
    let mut c = Nfs4Client::connect(srv.addr, "squash").unwrap();
    let fh = c.lookup("Projects/README.txt").unwrap();
    let mut owner = vec![0, 0, 0, 4];
    owner.extend_from_slice(b"1000");
    assert_eq!(
        setattr(&mut c, &fh, (0, [0; 12]), &[attr::OWNER], &owner),
        Err(Status::Perm.code())
    );
    // Setting the owner it already has is no change, and allowed.
    let mut same = vec![0, 0, 0, 1];
    same.extend_from_slice(b"0\0\0\0");
    setattr(&mut c, &fh, (0, [0; 12]), &[attr::OWNER], &same).unwrap();
}

/// Large WRITE payloads travel socket → pipe → file on Linux; whatever the
/// route, every byte lands where it was sent: odd lengths (XDR padding),
/// an operation after the WRITE, several WRITEs in flight, and a refused
/// WRITE whose payload must vanish without upsetting the next record.
#[test]
fn large_writes_land_byte_exact_whatever_their_route() {
    large_writes_land_byte_exact(false, false);
}

/// With `storage.direct_writes`, aligned payloads go to disk with O_DIRECT
/// while unaligned ones (one overlapping a direct one) stay buffered: the
/// file must still read back exactly.
#[test]
fn direct_and_buffered_writes_mix_byte_exact() {
    large_writes_land_byte_exact(false, true);
}

/// The same with payloads that arrive as 4 KiB pieces (the client lends
/// its pages to the socket, as a NIC's small frames would look): a pipe
/// fills before a megabyte is in, and the payload goes on in the next one.
/// Until that was handled, a full pipe stalled the connection for good.
#[cfg(target_os = "linux")]
#[test]
fn large_writes_in_small_pieces_land_byte_exact() {
    large_writes_land_byte_exact(true, false);
}

/// The streaming client of the benches and `aja` sends a frame's last,
/// shorter WRITE from the same buffer as its whole ones (its own head,
/// then the data, then the XDR padding): frames of odd lengths must land
/// whole and in place, copied or lent.
#[test]
fn write_stream_frames_of_odd_lengths_land_whole() {
    use markbase_nfs::tools::client::WriteStream;
    let srv = InProcess::start();
    let mut c = Nfs4Client::connect(srv.addr, "frames").unwrap();
    let root = c.lookup("").unwrap();
    let modes: &[bool] = if cfg!(target_os = "linux") {
        &[false, true]
    } else {
        &[false]
    };
    for &lend in modes {
        let name = format!("stream-{lend}.mov");
        let f = c
            .open(&root, &name, Create::Unchecked { mode: 0o644 }, BOTH)
            .unwrap();
        let chunk = 64 << 10;
        let mut stream = WriteStream::new(&c.rpc, &f, chunk, 0);
        if lend {
            assert!(stream.lend_payload(), "no pipe to lend pages through");
        }
        // Frames of 3 chunks + 1001 bytes (padding 3), exactly 2 chunks,
        // and 5 bytes (padding 3, a WRITE of one short chunk only).
        let frames = [3 * chunk as u64 + 1001, 2 * chunk as u64, 5, 70_002];
        let mut at = 0;
        for len in frames {
            stream.write(&mut c.rpc, at, len, 3).unwrap();
            at += len;
        }
        let mut got = Vec::new();
        loop {
            let (data, eof) = c.read(&f, got.len() as u64, 1 << 20).unwrap();
            got.extend_from_slice(&data);
            if eof || data.is_empty() {
                break;
            }
        }
        assert_eq!(got.len() as u64, at, "{name}: size");
        let stray = got.iter().position(|&b| b != 0xa5);
        assert_eq!(stray, None, "{name}: a byte not written by the stream");
        c.close(&f).unwrap();
    }
}

fn large_writes_land_byte_exact(lend: bool, direct: bool) {
    use markbase_nfs::nfs4::consts::{NFS4_PROGRAM, NFS4_VERSION, PROC_COMPOUND};
    use markbase_nfs::rpc::message::encode_call;
    use markbase_nfs::rpc::record::LAST_FRAGMENT;
    use markbase_nfs::xdr::Encoder;
    // Direct writes from the file's first byte on, or off.
    let srv = InProcess::start_with(|cfg| {
        cfg.storage.direct_writes = direct;
        cfg.storage.direct_after = 0;
    });
    let dispatcher = markbase_nfs::serve::dispatcher_for(srv.nfs.clone());
    let mut c = Nfs4Client::connect(srv.addr, "splice").unwrap();
    let root = c.lookup("").unwrap();
    let f = c
        .open(&root, "frames.mov", Create::Unchecked { mode: 0o644 }, BOTH)
        .unwrap();
    let pattern = |seed: u64, len: usize| -> Vec<u8> {
        (0..len as u64)
            .map(|i| ((i * 2654435761 + seed * 97) >> 7) as u8)
            .collect()
    };
    let spliced_before = markbase_nfs::net::splice_counts().spliced;
    // (offset, length): full, odd (padding 1..3), just above the splice
    // threshold, small (copied), the smallest that may go direct, and one
    // overlapping an earlier one.
    let writes: [(u64, usize); 7] = [
        (0, 1 << 20),
        (1 << 20, (1 << 20) - 1),
        ((2 << 20) - 1, 65_539),
        (3 << 20, 300_001),
        (4 << 20, 4_000),
        (5 << 20, 512 << 10),
        (500_000, 700_002),
    ];
    let mut want = vec![0u8; 6 << 20];
    let lender = lend.then(|| markbase_nfs::pipe::Pipe::with_capacity(1 << 20).unwrap());
    // Lent pages must stay as they are until the server has answered.
    let mut records = Vec::new();
    // All in flight at once, each followed by a GETATTR (the record goes
    // on after the payload).
    for (i, &(offset, len)) in writes.iter().enumerate() {
        let data = pattern(i as u64, len);
        want[offset as usize..offset as usize + len].copy_from_slice(&data);
        let args = Nfs4Client::write_args(&f, offset, &data, 0).getattr(&[4]);
        let Some(pipe) = &lender else {
            c.rpc
                .send_call(
                    NFS4_PROGRAM,
                    NFS4_VERSION,
                    PROC_COMPOUND,
                    &args.encode("w", 0),
                )
                .unwrap();
            continue;
        };
        let mut e = Encoder::with_buffer(vec![0; 4]);
        let xid = 0x5000 + i as u32;
        encode_call(
            &mut e,
            xid,
            NFS4_PROGRAM,
            NFS4_VERSION,
            PROC_COMPOUND,
            &c.rpc.credentials,
        );
        e.buf.extend_from_slice(&args.encode("w", 0));
        let record_len = e.buf.len() - 4;
        e.patch_u32(0, LAST_FRAGMENT | record_len as u32);
        let record = e.buf;
        let span = dispatcher.locate_bulk(&record[4..]).unwrap();
        let (at, end) = (4 + span.record_at, 4 + span.record_at + span.len);
        c.rpc.send_raw(&record[..at]).unwrap();
        let socket = std::os::fd::AsRawFd::as_raw_fd(c.rpc.stream());
        pipe.send_lent(socket, &record[at..end]).unwrap();
        c.rpc.send_raw(&record[end..]).unwrap();
        records.push(record);
    }
    for _ in &writes {
        let reply = c.rpc.read_record().unwrap().expect("a reply per WRITE");
        let (_, _, at) = markbase_nfs::rpc::message::decode_reply(&reply).unwrap();
        let r = markbase_nfs::tools::client::CompoundReply::decode(&reply[at..]).unwrap();
        assert_eq!(r.status, 0, "WRITE + GETATTR failed");
        assert_eq!(r.results, 3);
    }
    drop(records);
    // A WRITE with a stateid the server never issued: refused, its
    // megabyte discarded, and the connection goes on.
    let forged = markbase_nfs::tools::client::OpenFile {
        fh: f.fh.clone(),
        stateid: (1, [0xee; 12]),
    };
    let bad = Nfs4Client::write_args(&forged, 0, &pattern(99, 1 << 20), 0);
    let body = c.compound(&bad).unwrap();
    let err = Nfs4Client::parse_write(&body).unwrap_err();
    assert!(err.status().is_some(), "forged stateid accepted: {err:?}");
    let last = pattern(7, 200_000);
    c.write(&f, 6 << 20, &last, 0).unwrap();
    want.extend_from_slice(&last);
    let mut got = Vec::new();
    while got.len() < want.len() {
        let (data, _) = c.read(&f, got.len() as u64, 1 << 20).unwrap();
        assert!(!data.is_empty(), "short file at {}", got.len());
        got.extend_from_slice(&data);
    }
    assert!(got == want, "file content differs from what was written");
    let spliced = markbase_nfs::net::splice_counts().spliced;
    if cfg!(target_os = "linux") {
        // The eight payloads of 64 KiB and more, the forged one included.
        assert!(
            spliced - spliced_before >= 8,
            "large payloads were not spliced ({} of 8)",
            spliced - spliced_before
        );
        // The aligned ones (at 0 and at 5 MiB) went to disk directly
        // (counted once there: COMMIT waits for the direct-writer).
        c.commit(&f.fh).unwrap();
        let direct_written = srv.nfs.files().direct_written();
        if direct {
            assert!(direct_written >= 2, "{direct_written} payloads went direct");
        } else {
            assert_eq!(
                direct_written, 0,
                "payloads went direct with direct writes off"
            );
        }
    }
    c.close(&f).unwrap();
}

/// `storage.direct_after`: a file's first bytes stay buffered (a short
/// copy goes at page-cache speed); aligned payloads past the mark go to
/// disk directly. Both land byte-exact, and READs of the part written
/// direct (cold) go direct as well (`storage.direct_reads`).
#[cfg(target_os = "linux")]
#[test]
fn direct_writes_start_past_direct_after() {
    let srv = InProcess::start_with(|cfg| {
        cfg.storage.direct_writes = true;
        cfg.storage.direct_after = 2 << 20;
    });
    let mut c = Nfs4Client::connect(srv.addr, "direct-after").unwrap();
    let root = c.lookup("").unwrap();
    let f = c
        .open(&root, "render.mov", Create::Unchecked { mode: 0o644 }, BOTH)
        .unwrap();
    let mb = |k: u8| vec![k; 1 << 20];
    for k in 0..2u8 {
        c.write(&f, u64::from(k) << 20, &mb(k + 1), 0).unwrap();
    }
    // COMMIT first: direct payloads are counted once on disk, and an
    // UNSTABLE one may still be queued for it when its WRITE is answered.
    c.commit(&f.fh).unwrap();
    assert_eq!(srv.nfs.files().direct_written(), 0, "before direct_after");
    for k in 2..4u8 {
        c.write(&f, u64::from(k) << 20, &mb(k + 1), 0).unwrap();
    }
    c.commit(&f.fh).unwrap();
    assert_eq!(srv.nfs.files().direct_written(), 2, "past direct_after");
    // Read back last MiB first: the two written direct were never in the
    // page cache and are read direct too (before a buffered READ of the
    // first two has the kernel read ahead into them).
    let mut got = vec![Vec::new(); 4];
    for k in (0..4usize).rev() {
        let (data, _) = c.read(&f, (k as u64) << 20, 1 << 20).unwrap();
        got[k] = data;
    }
    for (k, data) in got.iter().enumerate() {
        assert!(
            *data == mb(k as u8 + 1),
            "MiB {k} differs from what was written"
        );
    }
    if markbase_nfs::storage::direct_reads_supported() {
        assert_eq!(srv.nfs.files().direct_read(), 2, "cold READs went direct");
    }
    c.close(&f).unwrap();
}
