//! COMPOUNDs on a real catalog while a namespace change holds the
//! catalog's locks: what a GETATTR or READDIR may hold while it waits.

use std::sync::Arc;

use crate::catalog::test_support::{finishes_beside_a_namespace_change, open_demo};
use crate::catalog::{Catalog, NodeId};
use crate::config::Config;
use crate::export::{handle, Export, Exports};
use crate::nfs4::attrs::Bitmap;
use crate::nfs4::consts::{attr, op, Status};
use crate::nfs4::server::Nfs4Server;
use crate::rpc::{Credentials, Dispatcher, Outcome};
use crate::tools::client::{CompoundArgs, CompoundReply};

/// The demo catalog served by a dispatcher, nothing loaded but the root.
struct Served {
    _dir: tempfile::TempDir,
    catalog: Arc<Catalog>,
    dispatcher: Arc<Dispatcher>,
}

impl Served {
    fn demo() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, storage) = open_demo(dir.path());
        let export = Arc::new(Export::new(Config::default(), catalog.clone(), storage));
        let nfs = Arc::new(Nfs4Server::serving(Exports::new(vec![export])));
        Served {
            _dir: dir,
            catalog,
            dispatcher: crate::serve::dispatcher_for(nfs),
        }
    }

    /// The COMPOUND status `args` gets.
    fn status_of(dispatcher: &Dispatcher, args: &CompoundArgs) -> u32 {
        let cred = Credentials::sys("edit-bay", 501, 20, &[]);
        let Outcome::Reply(reply) =
            dispatcher.dispatch(&args.call_record(1, &cred, "lock-order"), None)
        else {
            panic!("a COMPOUND gets a reply");
        };
        CompoundReply::of_reply_record(&reply.to_vec())
            .expect("a COMPOUND reply")
            .status
    }

    /// Whether `args` is answered OK, and a namespace change that runs
    /// `change` finishes, when the change holds the namespace lock first
    /// (see `finishes_beside_a_namespace_change`).
    fn answers_beside_a_namespace_change(
        &self,
        args: CompoundArgs,
        change: impl FnOnce() + Send + 'static,
    ) -> bool {
        let dispatcher = self.dispatcher.clone();
        let call = move || {
            let status = Served::status_of(&dispatcher, &args);
            assert_eq!(status, Status::Ok.code());
        };
        finishes_beside_a_namespace_change(&self.catalog, call, change)
    }
}

/// "Demo Film", a folder with two folders in it (Footage, Renders).
fn film() -> NodeId {
    NodeId::text("demo-film")
}

#[test]
fn getattr_of_a_folder_does_not_hold_it_while_its_listing_loads() {
    let s = Served::demo();
    let film = s.catalog.node(&film()).unwrap();
    let fh = handle::encode(1, &film.id).unwrap();
    // Its listing is not loaded: the link count loads it.
    let args = CompoundArgs::new()
        .putfh(&fh)
        .getattr(&[attr::TYPE, attr::NUMLINKS]);
    // What a create in the folder does under the namespace lock.
    let finished =
        s.answers_beside_a_namespace_change(args, move || film.update(|m| m.modified_ns += 1));
    assert!(
        finished,
        "GETATTR of a folder and a create in it wait for each other"
    );
}

#[test]
fn readdir_does_not_hold_the_listing_while_a_child_folders_listing_loads() {
    let s = Served::demo();
    // The folder's own listing is loaded; its child folders' are not, and
    // their link counts load them.
    let listing = s.catalog.listing(&film()).unwrap();
    assert_eq!(listing.read().subfolders(), 2);
    let fh = handle::encode(1, &film()).unwrap();
    let args = CompoundArgs::new().putfh(&fh).op(op::READDIR, |e| {
        e.u64(0);
        e.fixed(&[0; 8]);
        e.u32(4096);
        e.u32(32 << 10);
        Bitmap::of(&[attr::TYPE, attr::NUMLINKS]).encode(e);
    });
    // A create in the folder adds its name under the namespace lock.
    let finished = s.answers_beside_a_namespace_change(args, move || drop(listing.write()));
    assert!(
        finished,
        "READDIR of a folder and a create in it wait for each other"
    );
}
