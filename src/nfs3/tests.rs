//! NFSv3 handlers on a real catalog, called with typed arguments (no XDR).

use std::sync::Arc;

use super::args::*;
use super::reply::DirPage;
use super::*;
use crate::catalog::test_support::{finishes_beside_a_namespace_change, open_demo};
use crate::catalog::{Catalog, NodeId};
use crate::config::Config;
use crate::export::handle::NFS3_FHSIZE;
use crate::xdr::Encoder;

struct Fixture {
    _dir: tempfile::TempDir,
    export: Arc<Export>,
    catalog: Arc<Catalog>,
    cred: Credentials,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, storage) = open_demo(dir.path());
        let export = Arc::new(Export::new(Config::default(), catalog.clone(), storage));
        let cred = Credentials::sys("", 501, 20, &[]);
        Fixture {
            _dir: dir,
            export,
            catalog,
            cred,
        }
    }

    fn call(&self) -> Call<'_> {
        Call::new(&self.export, &self.cred)
    }

    fn fh(&self, node: &Node) -> Vec<u8> {
        self.export.handle_within(node, NFS3_FHSIZE).unwrap()
    }

    fn root(&self) -> Vec<u8> {
        self.fh(&self.export.catalog().root())
    }

    fn lookup(&self, dir: &[u8], name: &str) -> Nfs3Result<Arc<Node>> {
        names::lookup(
            &self.call(),
            &DirOpArgs {
                dir,
                name: name.as_bytes(),
            },
        )
        .result
    }

    fn create(&self, dir: &[u8], name: &str, how: CreateHow) -> Nfs3Result<Arc<Node>> {
        names::create(
            &self.call(),
            &CreateArgs {
                at: DirOpArgs {
                    dir,
                    name: name.as_bytes(),
                },
                how,
            },
        )
        .result
    }

    fn names(&self, page: &DirPage) -> Vec<String> {
        page.entries.iter().map(|e| e.name.clone()).collect()
    }
}

/// `.` and `..` first, then the rest in any order (cookie order).
fn in_listing_order(mut names: Vec<String>) -> Vec<String> {
    names[2..].sort();
    names
}

#[test]
fn lookup_answers_dot_dotdot_and_missing_names() {
    let f = Fixture::new();
    let root = f.root();
    let projects = f.lookup(&root, "Projects").unwrap();
    let pfh = f.fh(&projects);
    assert_eq!(f.lookup(&pfh, ".").unwrap().id, projects.id);
    assert!(f.lookup(&pfh, "..").unwrap().id.is_root());
    assert!(f.lookup(&root, "..").unwrap().id.is_root());
    assert_eq!(f.lookup(&pfh, "nope").unwrap_err(), Nfs3Status::NoEnt);
    let readme = f.lookup(&pfh, "README.txt").unwrap();
    let st = f.lookup(&f.fh(&readme), "x").unwrap_err();
    assert_eq!(st, Nfs3Status::NotDir);
    assert_eq!(
        f.lookup(b"not a handle", "x").unwrap_err(),
        Nfs3Status::BadHandle
    );
}

#[test]
fn creates_follow_their_mode() {
    let f = Fixture::new();
    let root = f.root();
    let attrs = Sattr3 {
        mode: Some(0o600),
        ..Sattr3::default()
    };
    let a = f
        .create(&root, "take.mov", CreateHow::Guarded(attrs.clone()))
        .unwrap();
    assert_eq!(a.meta().mode, Some(0o600));
    let st = f.create(&root, "take.mov", CreateHow::Guarded(attrs.clone()));
    assert_eq!(st.unwrap_err(), Nfs3Status::Exist);
    // UNCHECKED on an existing file: the same file, attributes kept.
    let again = f
        .create(&root, "take.mov", CreateHow::Unchecked(Sattr3::default()))
        .unwrap();
    assert_eq!(again.id, a.id);
    // EXCLUSIVE: a retransmission (same verifier) finds its own file.
    let x = f
        .create(&root, "excl.mov", CreateHow::Exclusive(*b"verifier"))
        .unwrap();
    let y = f
        .create(&root, "excl.mov", CreateHow::Exclusive(*b"verifier"))
        .unwrap();
    assert_eq!(x.id, y.id);
    let st = f.create(&root, "excl.mov", CreateHow::Exclusive(*b"another!"));
    assert_eq!(st.unwrap_err(), Nfs3Status::Exist);
    for bad in ["", ".", "a/b"] {
        assert!(
            f.create(&root, bad, CreateHow::Unchecked(Sattr3::default()))
                .is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn remove_and_rmdir_take_their_own_kind_only() {
    let f = Fixture::new();
    let root = f.root();
    let call = f.call();
    let op = |name: &str, folder: bool| {
        names::remove(
            &call,
            &DirOpArgs {
                dir: &root,
                name: name.as_bytes(),
            },
            folder,
        )
        .result
    };
    assert_eq!(op("Projects", false).unwrap_err(), Nfs3Status::IsDir);
    assert_eq!(op("Projects", true).unwrap_err(), Nfs3Status::NotEmpty);
    f.create(&root, "scratch", CreateHow::Unchecked(Sattr3::default()))
        .unwrap();
    assert_eq!(op("scratch", true).unwrap_err(), Nfs3Status::NotDir);
    op("scratch", false).unwrap();
    assert_eq!(op("scratch", false).unwrap_err(), Nfs3Status::NoEnt);
}

#[test]
fn readdir_pages_start_with_dot_entries_and_resume_by_cookie() {
    let f = Fixture::new();
    let root = f.root();
    let call = f.call();
    let read = |cookie: u64, count: u32| {
        dirs::readdir(
            &call,
            &ReaddirArgs {
                dir: &root,
                cookie,
                verifier: [0; 8],
                count,
            },
        )
        .result
    };
    let all = read(0, 65536).unwrap();
    assert!(all.eof);
    assert_eq!(
        in_listing_order(f.names(&all)),
        vec![".", "..", "Library", "Projects"]
    );
    // A page with room for two entries, then the rest from its cookie.
    let first = read(0, 160).unwrap();
    assert!(!first.eof);
    let last = first.entries.last().unwrap().cookie;
    let rest = read(last, 65536).unwrap();
    let mut names = f.names(&first);
    names.extend(f.names(&rest));
    assert_eq!(
        in_listing_order(names),
        vec![".", "..", "Library", "Projects"]
    );
    assert_eq!(read(0, 100).unwrap_err(), Nfs3Status::TooSmall);
}

#[test]
fn setattr_guard_and_write_lengths_are_checked() {
    let f = Fixture::new();
    let root = f.root();
    let file = f
        .create(&root, "cut.mov", CreateHow::Unchecked(Sattr3::default()))
        .unwrap();
    let fh = f.fh(&file);
    let call = f.call();
    let stale_guard = Time3 {
        seconds: 1,
        nseconds: 0,
    };
    let set = SetattrArgs {
        fh: &fh,
        attrs: Sattr3 {
            mode: Some(0o640),
            ..Sattr3::default()
        },
        guard: Some(stale_guard),
    };
    assert_eq!(
        info::setattr(&call, &set).result.unwrap_err(),
        Nfs3Status::NotSync
    );
    assert_eq!(file.meta().mode, None);
    let guard = reply::ctime_of(file.change());
    let set = SetattrArgs {
        guard: Some(guard),
        ..set
    };
    info::setattr(&call, &set).result.unwrap();
    assert_eq!(file.meta().mode, Some(0o640));
    // count and data disagree: INVAL, nothing written.
    let w = WriteArgs {
        fh: &fh,
        offset: 0,
        count: 10,
        stable: FILE_SYNC,
        data: Payload::Bytes(b"abc"),
    };
    assert_eq!(
        data::write(&call, &w).result.unwrap_err(),
        Nfs3Status::Inval
    );
    assert_eq!(file.size(), 0);
    let w = WriteArgs { count: 3, ..w };
    let ok = data::write(&call, &w).result.unwrap();
    assert_eq!((ok.count, ok.committed, file.size()), (3, FILE_SYNC, 3));
    let r = data::read(
        &call,
        &ReadArgs {
            fh: &fh,
            offset: 0,
            count: 100,
        },
    )
    .result
    .unwrap();
    assert_eq!((&r.data[..], r.eof), (&b"abc"[..], true));
    // No hard links.
    let l = names::link(
        &call,
        &LinkArgs {
            file: &fh,
            link: DirOpArgs {
                dir: &root,
                name: b"hard",
            },
        },
    );
    assert_eq!(l.result.unwrap_err(), Nfs3Status::MLink);
}

#[test]
fn a_folders_attributes_do_not_wait_for_a_create_in_it_while_holding_it() {
    let f = Fixture::new();
    let catalog = f.catalog.clone();
    // "Demo Film", whose listing nothing has loaded: its link count loads
    // it, under the namespace lock.
    let film = catalog.node(&NodeId::text("demo-film")).unwrap();
    let touched = film.clone();
    let finished = finishes_beside_a_namespace_change(
        &catalog,
        move || {
            let mut e = Encoder::new();
            reply::fattr3(&f.call(), &mut e, &film);
            assert_eq!(e.buf.len(), 84, "a whole fattr3");
        },
        // What a create in the folder does under the namespace lock.
        move || touched.update(|m| m.modified_ns += 1),
    );
    assert!(
        finished,
        "GETATTR of a folder and a create in it wait for each other"
    );
}
