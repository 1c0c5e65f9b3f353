//! RFC 7530 rules that real clients lean on, each checked through the wire:
//! READ's eof, READDIR's TOOSMALL, the special stateids, a zero-length
//! WRITE, and files removed or renamed over while open staying usable
//! through their opens until CLOSE.

mod common;

use common::*;
use markbase_nfs::catalog::NodeId;
use markbase_nfs::nfs4::consts::{attr, op, Status};
use markbase_nfs::tools::client::{CompoundArgs, Create, Nfs4Client, OpenFile};
use std::time::Duration;

const BOTH: u32 = 3;

/// A new file in `dir` holding `data`, still open.
fn file_with(c: &mut Nfs4Client, dir: &[u8], name: &str, data: &[u8]) -> OpenFile {
    let f = c
        .open(dir, name, Create::Unchecked { mode: 0o644 }, BOTH)
        .unwrap();
    c.write(&f, 0, data, 2).unwrap();
    f
}

/// A client `who` and a file `name` in Projects holding `data`, closed:
/// (client, folder handle, file).
fn closed_file(
    srv: &InProcess,
    who: &str,
    name: &str,
    data: &[u8],
) -> (Nfs4Client, Vec<u8>, OpenFile) {
    let mut c = Nfs4Client::connect(srv.addr, who).unwrap();
    let dir = c.lookup("Projects").unwrap();
    let f = file_with(&mut c, &dir, name, data);
    c.close(&f).unwrap();
    (c, dir, f)
}

/// RFC 7530 §16.23.4: eof is TRUE when the READ reaches the end of the
/// file — including a READ of the whole file, and a zero-count READ at the
/// end — and a READ past the end answers no data and eof, however far.
#[test]
fn read_says_eof_when_it_reaches_the_end() {
    let srv = InProcess::start();
    let mut c = Nfs4Client::connect(srv.addr, "eof").unwrap();
    let dir = c.lookup("Projects").unwrap();
    let f = file_with(&mut c, &dir, "ten.bin", b"0123456789");
    // The whole file, exactly.
    assert_eq!(c.read(&f, 0, 10).unwrap(), (b"0123456789".to_vec(), true));
    // Up to the end from the middle, and more than there is.
    assert_eq!(c.read(&f, 4, 6).unwrap(), (b"456789".to_vec(), true));
    assert_eq!(c.read(&f, 4, 100).unwrap(), (b"456789".to_vec(), true));
    // Short of the end.
    assert_eq!(c.read(&f, 0, 9).unwrap(), (b"012345678".to_vec(), false));
    // Zero bytes at the end, and before it.
    assert_eq!(c.read(&f, 10, 0).unwrap(), (Vec::new(), true));
    assert_eq!(c.read(&f, 3, 0).unwrap(), (Vec::new(), false));
    // Past the end, near and far.
    assert_eq!(c.read(&f, 11, 10).unwrap(), (Vec::new(), true));
    assert_eq!(c.read(&f, 1 << 40, 4096).unwrap(), (Vec::new(), true));
    assert_eq!(c.read(&f, u64::MAX - 5, 4096).unwrap(), (Vec::new(), true));
    // An empty file: every READ is at its end.
    let e = c
        .open(&dir, "empty.bin", Create::Unchecked { mode: 0o644 }, BOTH)
        .unwrap();
    assert_eq!(c.read(&e, 0, 4096).unwrap(), (Vec::new(), true));
    c.close(&e).unwrap();
    c.close(&f).unwrap();
}

/// RFC 7530 §16.24.4: a maxcount too small for the reply (even with no
/// entry to return) is TOOSMALL, not an empty page.
#[test]
fn readdir_with_no_room_is_toosmall() {
    let srv = InProcess::start();
    let mut c = Nfs4Client::connect(srv.addr, "toosmall").unwrap();
    let root = c.lookup("").unwrap();
    // An empty folder.
    let args = CompoundArgs::new().putfh(&root).op(op::CREATE, |e| {
        e.u32(2); // NF4DIR
        e.string("Empty");
        e.u32(0);
        e.u32(0);
    });
    c.compound(&args).unwrap();
    let empty = c.lookup("Empty").unwrap();
    let projects = c.lookup("Projects").unwrap();
    let readdir = |c: &mut Nfs4Client, dir: &[u8], maxcount: u32| -> Result<(), u32> {
        let args = CompoundArgs::new().putfh(dir).op(op::READDIR, |e| {
            e.u64(0);
            e.fixed(&[0; 8]);
            e.u32(maxcount);
            e.u32(maxcount);
            markbase_nfs::nfs4::attrs::Bitmap::of(&[attr::TYPE]).encode(e);
        });
        let body = c.compound(&args).map_err(|e| e.status().unwrap_or(0))?;
        let mut r = Nfs4Client::results(&body);
        r.next(op::PUTFH).unwrap();
        r.next(op::READDIR)
            .map(|_| ())
            .map_err(|e| e.status().unwrap_or(0))
    };
    for maxcount in [0, 8, 15] {
        assert_eq!(
            readdir(&mut c, &empty, maxcount),
            Err(Status::TooSmall.code()),
            "empty folder, maxcount {maxcount}"
        );
        assert_eq!(
            readdir(&mut c, &projects, maxcount),
            Err(Status::TooSmall.code()),
            "folder with entries, maxcount {maxcount}"
        );
    }
    assert_eq!(readdir(&mut c, &empty, 16), Ok(()));
    assert_eq!(readdir(&mut c, &projects, 4096), Ok(()));
}

/// The way editors' apps save: write a temporary file, rename it over the
/// original. Whoever still has the original open keeps reading, writing
/// and closing it (RFC 7530 §16.26: the replaced file stays until its last
/// open goes); its content goes with that CLOSE. Likewise after a REMOVE.
#[test]
fn files_renamed_over_or_removed_stay_usable_through_their_opens() {
    let srv = InProcess::start();
    let mut c = Nfs4Client::connect(srv.addr, "saver").unwrap();
    let mut other = Nfs4Client::connect(srv.addr, "viewer").unwrap();
    let dir = c.lookup("Projects").unwrap();
    let original = file_with(&mut c, &dir, "cut.fcpxml", b"version 1");
    let content_of = |name: &str| {
        let listing = srv
            .nfs
            .catalog()
            .listing(&NodeId::text("demo-projects"))
            .unwrap();
        let id = listing.read().get(name).unwrap().id.clone();
        srv.nfs
            .catalog()
            .node(&id)
            .unwrap()
            .meta()
            .content
            .clone()
            .unwrap()
    };
    let original_content = content_of("cut.fcpxml");
    // Another client holds the original open for reading.
    let odir = other.lookup("Projects").unwrap();
    let viewing = other.open(&odir, "cut.fcpxml", Create::No, 1).unwrap();

    let temp = file_with(&mut c, &dir, ".cut.fcpxml.tmp", b"version 2, longer");
    c.close(&temp).unwrap();
    c.rename(&dir, ".cut.fcpxml.tmp", &dir, "cut.fcpxml")
        .unwrap();

    // The name shows the new file ...
    let now = c.open(&dir, "cut.fcpxml", Create::No, 1).unwrap();
    assert_eq!(c.read(&now, 0, 100).unwrap().0, b"version 2, longer");
    c.close(&now).unwrap();
    // ... while both opens of the replaced one still work on it.
    assert_eq!(
        other.read(&viewing, 0, 100).unwrap(),
        (b"version 1".to_vec(), true)
    );
    c.write(&original, 9, b", amended", 2).unwrap();
    assert_eq!(c.read(&original, 0, 100).unwrap().0, b"version 1, amended");
    assert_eq!(size_of(&mut c, &original.fh), 18);
    c.close(&original).unwrap();
    assert!(original_content.exists(), "another open still uses it");
    other.close(&viewing).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !original_content.exists()),
        "the replaced file's content goes with its last open"
    );
    // Now the handle is stale: no open holds the file any more.
    assert_eq!(status_of(c.read(&original, 0, 10)), Status::Stale.code());

    // REMOVE of an open file.
    let doomed = file_with(&mut c, &dir, "render.log", b"frame 1\n");
    let doomed_content = content_of("render.log");
    c.remove(&dir, "render.log").unwrap();
    assert_eq!(
        c.lookup("Projects/render.log").map_err(|e| e.status()),
        Err(Some(Status::NoEnt.code()))
    );
    c.write(&doomed, 8, b"frame 2\n", 2).unwrap();
    assert_eq!(c.read(&doomed, 0, 100).unwrap().0, b"frame 1\nframe 2\n");
    c.close(&doomed).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !doomed_content.exists()));
}

/// RFC 7530 §9.1.4.3: the all-ones stateid writes (WRITE, SETATTR of the
/// size) as the anonymous one does; §16.36.4: a zero-length WRITE changes
/// neither size nor time_modify.
#[test]
fn special_stateids_write_and_empty_writes_change_nothing() {
    let srv = InProcess::start();
    let (mut c, _, f) = closed_file(&srv, "special", "notes.txt", b"abc");
    let all_ones = OpenFile {
        fh: f.fh.clone(),
        stateid: (u32::MAX, [0xff; 12]),
    };
    c.write(&all_ones, 3, b"def", 2).unwrap();
    let anonymous = OpenFile {
        fh: f.fh.clone(),
        stateid: (0, [0; 12]),
    };
    assert_eq!(c.read(&anonymous, 0, 100).unwrap().0, b"abcdef");
    let size_mtime = |c: &mut Nfs4Client| getattr(c, &f.fh, &[attr::SIZE, attr::TIME_MODIFY]);
    let before = size_mtime(&mut c);
    std::thread::sleep(std::time::Duration::from_millis(20));
    c.write(&all_ones, 100, b"", 2).unwrap();
    c.write(&anonymous, 0, b"", 0).unwrap();
    assert_eq!(
        size_mtime(&mut c),
        before,
        "an empty WRITE changed size or mtime"
    );
    // SETATTR(size) with the all-ones stateid.
    let args = CompoundArgs::new().putfh(&f.fh).op(op::SETATTR, |e| {
        e.u32(u32::MAX);
        e.fixed(&[0xff; 12]);
        markbase_nfs::nfs4::attrs::Bitmap::of(&[attr::SIZE]).encode(e);
        e.u32(8);
        e.u64(2);
    });
    let body = c.compound(&args).unwrap();
    let mut r = Nfs4Client::results(&body);
    r.next(op::PUTFH).unwrap();
    r.next(op::SETATTR).unwrap();
    assert_eq!(c.read(&anonymous, 0, 100).unwrap(), (b"ab".to_vec(), true));
}

/// RFC 7530 §5.5: supported_attrs lists the write-only attributes too
/// (time_access_set, time_modify_set), and asking to read one is INVAL.
#[test]
fn write_only_attributes_are_listed_and_not_readable() {
    let srv = InProcess::start();
    let mut c = Nfs4Client::connect(srv.addr, "attrs").unwrap();
    let root = c.lookup("").unwrap();
    let v = getattr(&mut c, &root, &[attr::SUPPORTED_ATTRS]);
    let mut d = markbase_nfs::xdr::Decoder::new(&v);
    let listed = markbase_nfs::nfs4::attrs::Bitmap::decode(&mut d).unwrap();
    assert!(listed.contains(48) && listed.contains(54), "{listed:?}");
    for write_only in [48, 54] {
        let args = CompoundArgs::new()
            .putfh(&root)
            .getattr(&[attr::TYPE, write_only]);
        let body = c.compound(&args);
        let status = match body {
            Ok(body) => {
                let mut r = Nfs4Client::results(&body);
                r.next(op::PUTFH).unwrap();
                r.next(op::GETATTR).err().and_then(|e| e.status())
            }
            Err(e) => e.status(),
        };
        assert_eq!(
            status,
            Some(Status::Inval.code()),
            "GETATTR of {write_only}"
        );
    }
}

/// RFC 7530 §9.1.7: a retransmission (the owner's last seqid, the same
/// request) gets the recorded reply; another request reusing that seqid is
/// BAD_SEQID. Before, a CLOSE reusing an OPEN_CONFIRM's seqid got the
/// OPEN_CONFIRM's reply, stateid and all, as its own.
#[test]
fn only_the_same_request_is_answered_from_the_replay_record() {
    let srv = InProcess::start();
    let mut c = Nfs4Client::connect(srv.addr, "replay").unwrap();
    let dir = c.lookup("Projects").unwrap();
    let f = file_with(&mut c, &dir, "shot.mov", b"frames");
    let close_with = |c: &mut Nfs4Client, seqid: u32| -> Result<Vec<u8>, u32> {
        let args = CompoundArgs::new().putfh(&f.fh).op(op::CLOSE, |e| {
            e.u32(seqid);
            e.u32(f.stateid.0);
            e.fixed(&f.stateid.1);
        });
        let body = c.compound(&args).map_err(|e| e.status().unwrap_or(0))?;
        let mut r = Nfs4Client::results(&body);
        r.next(op::PUTFH).unwrap();
        let d = r.next(op::CLOSE).map_err(|e| e.status().unwrap_or(0))?;
        Ok(d.rest().to_vec())
    };
    // The last seqid went to the OPEN (or its OPEN_CONFIRM): a CLOSE with it
    // is another request.
    let last = c.next_seqid() - 1;
    assert_eq!(close_with(&mut c, last), Err(Status::BadSeqId.code()));
    // The real CLOSE, then its retransmission: the same reply.
    let next = c.next_seqid();
    let first = close_with(&mut c, next).unwrap();
    assert_eq!(first.len(), 16, "a CLOSE result is one stateid");
    assert_eq!(close_with(&mut c, next), Ok(first));
}

/// RFC 7530 §16.1: ACCESS reports (as supported) only the rights that mean
/// something for the object: LOOKUP and DELETE for folders, EXECUTE for
/// files.
#[test]
fn access_reports_the_rights_of_the_objects_type() {
    let srv = InProcess::start();
    let mut c = Nfs4Client::connect(srv.addr, "access").unwrap();
    let access = |c: &mut Nfs4Client, fh: &[u8]| -> (u32, u32) {
        let args = CompoundArgs::new()
            .putfh(fh)
            .op(op::ACCESS, |e| e.u32(0x3f));
        let body = c.compound(&args).unwrap();
        let mut r = Nfs4Client::results(&body);
        r.next(op::PUTFH).unwrap();
        let d = r.next(op::ACCESS).unwrap();
        (d.u32().unwrap(), d.u32().unwrap())
    };
    let dir = c.lookup("Projects").unwrap();
    let file = c.lookup("Projects/README.txt").unwrap();
    // READ 1, LOOKUP 2, MODIFY 4, EXTEND 8, DELETE 0x10, EXECUTE 0x20.
    let (supported, granted) = access(&mut c, &dir);
    assert_eq!(supported, 0x1f, "folder");
    assert_eq!(granted & !supported, 0);
    let (supported, granted) = access(&mut c, &file);
    assert_eq!(supported, 0x2d, "file");
    assert_eq!(granted & !supported, 0);
}

/// RFC 7530 §16.16.5: an UNCHECKED4 OPEN of an existing file leaves it as
/// it is, but for a size of zero (O_TRUNC); an OPEN for reading that
/// creates a file with a size gets that size (the server applies the
/// createattrs itself, it is not a WRITE through the open).
#[test]
fn unchecked_createattrs_apply_to_new_files_and_truncate_only() {
    let srv = InProcess::start();
    let (mut c, dir, _) = closed_file(&srv, "createattrs", "take.mov", b"0123456789");
    let sized = |mode, size| Create::UncheckedSized { mode, size };
    // Existing: a size other than zero is not applied.
    let g = c.open(&dir, "take.mov", sized(0o600, 5), BOTH).unwrap();
    assert_eq!(size_of(&mut c, &g.fh), 10);
    c.close(&g).unwrap();
    // Zero truncates.
    let g = c.open(&dir, "take.mov", sized(0o600, 0), BOTH).unwrap();
    assert_eq!(size_of(&mut c, &g.fh), 0);
    c.close(&g).unwrap();
    // New, opened for reading only, with a size.
    let n = c.open(&dir, "reserved.mov", sized(0o644, 4096), 1).unwrap();
    assert_eq!(size_of(&mut c, &n.fh), 4096);
    c.close(&n).unwrap();
}

/// RFC 7530 §16.19.4: OPEN_DOWNGRADE to an access the owner never opened
/// with (READ alone, after an OPEN for both) is INVAL.
#[test]
fn open_downgrade_to_an_access_never_opened_is_inval() {
    let srv = InProcess::start();
    let mut c = Nfs4Client::connect(srv.addr, "downgrade").unwrap();
    let dir = c.lookup("Projects").unwrap();
    let f = file_with(&mut c, &dir, "grade.mov", b"x");
    let seqid = c.next_seqid();
    let args = CompoundArgs::new()
        .putfh(&f.fh)
        .op(op::OPEN_DOWNGRADE, |e| {
            e.u32(f.stateid.0);
            e.fixed(&f.stateid.1);
            e.u32(seqid);
            e.u32(1); // READ
            e.u32(0);
        });
    let body = c.compound(&args).unwrap();
    let mut r = Nfs4Client::results(&body);
    r.next(op::PUTFH).unwrap();
    let status = r.next(op::OPEN_DOWNGRADE).err().and_then(|e| e.status());
    assert_eq!(status, Some(Status::Inval.code()));
}
