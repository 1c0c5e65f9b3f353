//! Calls on a real catalog: what a GETATTR or READDIR may hold while a
//! namespace change holds the catalog's locks, and what a change's call
//! holds (its reply, not its thread) until the journal has written it,
//! and what its retransmission gets meanwhile — COMPOUNDs, and an NFSv3
//! REMOVE beside them.

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
        let reply = answered(dispatcher, &args.call_record(1, &cred(), "lock-order"));
        CompoundReply::of_reply_record(&reply)
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

/// What a REMOVE of README.txt (content and all) gets when sent as
/// `record` while the journal is held: the call returns at once with its
/// reply held; the reply and the content file's discarding wait for the
/// journal; then the reply goes out and the content goes. The reply.
fn removed_while_the_journal_is_held(s: &Served, record: Vec<u8>) -> crate::rpc::Reply {
    use std::sync::mpsc;
    use std::time::Duration;
    let readme = s.catalog.node(&NodeId::text("demo-readme")).unwrap();
    let content = readme.meta().content.clone().unwrap();
    let held = s.catalog.hold_journal();
    let outcome = dispatched_on_a_thread(s, record);
    let Outcome::Held(reply, hold) = outcome else {
        panic!("a REMOVE's reply is held until it is durable: {outcome:?}");
    };
    let (sent_tx, sent) = mpsc::channel();
    hold.release(reply, Box::new(move |r| sent_tx.send(r).unwrap()));
    assert!(
        sent.recv_timeout(Duration::from_millis(300)).is_err(),
        "the reply went out before the journal wrote the removal"
    );
    assert!(
        content.exists(),
        "the content went before the removal was durable"
    );
    drop(held);
    let reply = sent
        .recv_timeout(Duration::from_secs(10))
        .expect("the reply once the journal wrote the removal");
    let projects = NodeId::text("demo-projects");
    assert!(s.catalog.lookup(&projects, "README.txt").unwrap().is_none());
    // The content file goes (on the remover's thread) once the reply may.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while content.exists() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!content.exists(), "the removed file's content stayed");
    reply
}

/// What the dispatcher gives `record`, run on a thread of its own: the
/// call must be done with that thread within 10 s.
fn dispatched_on_a_thread(s: &Served, record: Vec<u8>) -> Outcome {
    let (outcome_tx, outcome) = std::sync::mpsc::channel();
    let dispatcher = s.dispatcher.clone();
    std::thread::spawn(move || {
        let _ = outcome_tx.send(dispatcher.dispatch_with_bulk(&record, None, None));
    });
    outcome
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the call's thread waited for the journal")
}

fn cred() -> Credentials {
    Credentials::sys("edit-bay", 501, 20, &[])
}

/// The reply `record` gets (the dispatcher waits for a held one).
fn answered(dispatcher: &Dispatcher, record: &[u8]) -> Vec<u8> {
    let Outcome::Reply(reply) = dispatcher.dispatch(record, None) else {
        panic!("a call gets a reply");
    };
    reply.to_vec()
}

/// A COMPOUND removing Projects/README.txt.
fn remove_of_readme() -> CompoundArgs {
    CompoundArgs::new()
        .putfh(&handle::encode(1, &NodeId::text("demo-projects")).unwrap())
        .op(op::REMOVE, |e| e.string("README.txt"))
}

/// An NFSv3 REMOVE of Projects/README.txt.
fn nfsv3_remove_of_readme(xid: u32) -> Vec<u8> {
    let mut e = crate::xdr::Encoder::new();
    crate::rpc::message::encode_call(&mut e, xid, 100003, 3, crate::nfs3::proc3::REMOVE, &cred());
    e.opaque(&handle::encode(1, &NodeId::text("demo-projects")).unwrap());
    e.string("README.txt");
    e.buf
}

/// XDR words.
pub(super) fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_be_bytes()).collect()
}

#[test]
fn a_change_waits_for_the_journal_in_its_held_reply_not_on_its_thread() {
    let s = Served::demo();
    let args = remove_of_readme();
    let reply = removed_while_the_journal_is_held(&s, args.call_record(7, &cred(), "held"));
    let status = CompoundReply::of_reply_record(&reply.to_vec())
        .unwrap()
        .status;
    assert_eq!(status, Status::Ok.code());
}

#[test]
fn an_nfsv3_change_waits_for_the_journal_in_its_held_reply_not_on_its_thread() {
    let s = Served::demo();
    let reply = removed_while_the_journal_is_held(&s, nfsv3_remove_of_readme(8)).to_vec();
    let (_, _, at) = crate::rpc::message::decode_reply(&reply).unwrap();
    assert_eq!(reply[at..at + 4], [0; 4], "REMOVE3res status NFS3_OK");
}

/// A change the journal cannot take fails in the reply, at its operation
/// (here the writer has stopped, as when the server goes down under it).
#[test]
fn a_change_that_cannot_be_made_durable_fails_its_operation() {
    let s = Served::demo();
    s.catalog.shutdown();
    let args = remove_of_readme().getattr(&[attr::TYPE]);
    let reply = answered(&s.dispatcher, &args.call_record(9, &cred(), "down"));
    let reply = CompoundReply::of_reply_record(&reply).unwrap();
    let fault = Status::ServerFault.code();
    assert_eq!((reply.status, reply.results), (fault, 2));
    assert_eq!(
        reply.body,
        words(&[op::PUTFH, 0, op::REMOVE, fault]),
        "the reply ends at REMOVE, with its failure"
    );
}

/// The same over NFSv3: REMOVE3resfail, its folder's attributes absent.
#[test]
fn an_nfsv3_change_that_cannot_be_made_durable_fails_its_procedure() {
    let s = Served::demo();
    s.catalog.shutdown();
    let reply = answered(&s.dispatcher, &nfsv3_remove_of_readme(10));
    let (_, _, at) = crate::rpc::message::decode_reply(&reply).unwrap();
    let serverfault = crate::nfs3::Nfs3Status::ServerFault.code();
    assert_eq!(reply[at..], words(&[serverfault, 0, 0])[..]);
}

/// A retransmitted OPEN gets its recorded reply no sooner than the first
/// sending got it: once the file it created is durable.
#[test]
fn a_retransmitted_open_is_not_answered_before_its_create_is_durable() {
    let s = Served::demo();
    let body = |args: &CompoundArgs| {
        let reply = answered(&s.dispatcher, &args.call_record(1, &cred(), "c"));
        CompoundReply::of_reply_record(&reply).unwrap()
    };
    let set = body(&CompoundArgs::new().op(op::SETCLIENTID, |e| {
        e.fixed(&[1; 8]);
        e.string("edit-bay");
        e.u32(0x4000_0000);
        e.string("tcp");
        e.string("127.0.0.1.0.0");
        e.u32(1);
    }));
    assert_eq!(set.status, Status::Ok.code());
    let mut d = crate::xdr::Decoder::new(&set.body[8..]);
    let (clientid, verifier) = (d.u64().unwrap(), d.array::<8>().unwrap());
    let confirmed = body(&CompoundArgs::new().op(op::SETCLIENTID_CONFIRM, |e| {
        e.u64(clientid);
        e.fixed(&verifier);
    }));
    assert_eq!(confirmed.status, Status::Ok.code());
    let open = CompoundArgs::new()
        .putfh(&handle::encode(1, &NodeId::text("demo-projects")).unwrap())
        .op(op::OPEN, |e| {
            e.u32(1); // seqid
            e.u32(2); // share_access WRITE
            e.u32(0);
            e.u64(clientid);
            e.opaque(b"owner");
            e.u32(1); // OPEN4_CREATE, UNCHECKED4, no attributes
            e.u32(0);
            Bitmap::default().encode(e);
            e.u32(0);
            e.u32(0); // CLAIM_NULL
            e.string("Take 2.mov");
        });
    let [first, again] =
        sent_twice_while_the_journal_is_held(&s, open.call_record(20, &cred(), "open"))
            .map(|r| CompoundReply::of_reply_record(&r).unwrap());
    assert_eq!(first.status, Status::Ok.code());
    assert_eq!(first.body, again.body, "the recorded reply");
}

/// The replies of `record` sent twice (the second a retransmission) while
/// the journal is held: neither may be answered before the journal has
/// written what the first changed.
fn sent_twice_while_the_journal_is_held(s: &Served, record: Vec<u8>) -> [Vec<u8>; 2] {
    use std::time::Duration;
    let held = s.catalog.hold_journal();
    let mut replies = Vec::new();
    for sending in ["first", "retransmitted"] {
        let Outcome::Held(reply, hold) = dispatched_on_a_thread(s, record.clone()) else {
            panic!("the {sending} call was answered before its change was durable");
        };
        let (tx, rx) = std::sync::mpsc::channel();
        hold.release(reply, Box::new(move |r| drop(tx.send(r.to_vec()))));
        replies.push(rx);
    }
    assert!(replies[1].recv_timeout(Duration::from_millis(200)).is_err());
    drop(held);
    [&replies[0], &replies[1]].map(|rx| rx.recv_timeout(Duration::from_secs(10)).unwrap())
}

/// A REMOVE retransmitted while the first sending's reply waits for the
/// journal does not run again (it would answer NOENT): it gets that reply.
#[test]
fn a_remove_retransmitted_while_its_reply_is_held_gets_that_reply() {
    let s = Served::demo();
    let args = remove_of_readme();
    let [first, again] =
        sent_twice_while_the_journal_is_held(&s, args.call_record(21, &cred(), "rm"))
            .map(|r| CompoundReply::of_reply_record(&r).unwrap());
    assert_eq!(first.status, Status::Ok.code());
    assert_eq!((again.status, again.body), (first.status, first.body));
}

/// The same over NFSv3.
#[test]
fn an_nfsv3_remove_retransmitted_while_its_reply_is_held_gets_that_reply() {
    let s = Served::demo();
    let [first, again] = sent_twice_while_the_journal_is_held(&s, nfsv3_remove_of_readme(22));
    let (_, _, at) = crate::rpc::message::decode_reply(&first).unwrap();
    assert_eq!(first[at..at + 4], [0; 4], "REMOVE3res status NFS3_OK");
    assert_eq!(again, first);
}
