//! SIGKILL in the middle of 10,000 creates, renames and removes: nothing the
//! server answered is lost, nothing it undid comes back, and the catalog and
//! the storage folder agree after the restart (every file row has its
//! content file). The witness is the catalog itself (SQLite, as the MarkBase
//! app reads it) and the disk; the project's client only drives the load.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use markbase_nfs::tools::client::{Create, Nfs4Client};

/// What the client was told: each name it touched, and whether it exists.
#[derive(Default)]
struct Told {
    names: BTreeMap<String, bool>,
    /// The names of the change in flight when the server died (either
    /// outcome is right for them).
    unsure: Vec<String>,
    answered: usize,
}

const OPS: usize = 10_000;
const KILL_AFTER: usize = 3_000;

/// Runs up to `OPS` namespace changes in the root folder, one at a time:
/// two creates (OPEN + CLOSE), then a rename of the newest name, then a
/// remove of the oldest, over and over, until the server stops answering.
fn drive(addr: std::net::SocketAddr, progress: Arc<AtomicUsize>) -> Told {
    let mut told = Told::default();
    let mut c = Nfs4Client::connect(addr, "crash-driver").expect("connect");
    let root = c.lookup("").expect("root handle");
    let mut live: VecDeque<String> = VecDeque::new();
    let started = Instant::now();
    for i in 0..OPS {
        if started.elapsed() > Duration::from_secs(180) {
            break;
        }
        let (touched, result) = match i % 4 {
            0 | 1 => {
                let name = format!("clip{i:05}.mov");
                let r = c
                    .open(&root, &name, Create::Unchecked { mode: 0o644 }, 2)
                    .and_then(|f| c.close(&f));
                (vec![(name, true)], r)
            }
            2 => {
                let Some(old) = live.pop_back() else { continue };
                let new = format!("renamed{i:05}.mov");
                let r = c.rename(&root, &old, &root, &new);
                (vec![(old, false), (new, true)], r)
            }
            _ => {
                let Some(old) = live.pop_front() else {
                    continue;
                };
                let r = c.remove(&root, &old);
                (vec![(old, false)], r)
            }
        };
        if result.is_err() {
            told.unsure = touched.into_iter().map(|(n, _)| n).collect();
            return told;
        }
        for (name, exists) in touched {
            if exists {
                live.push_back(name.clone());
            }
            told.names.insert(name, exists);
        }
        told.answered += 1;
        progress.store(told.answered, Ordering::Relaxed);
    }
    told
}

/// Labels of the root folder's rows, and the content path of each file.
fn catalog_rows(db: &std::path::Path) -> BTreeMap<String, Option<String>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut st = conn
        .prepare(
            "SELECT label, json_extract(aliases_json, '$.path') FROM file_nodes
             WHERE parent_id IS NULL AND (label LIKE 'clip%' OR label LIKE 'renamed%')",
        )
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn sigkill_amid_namespace_changes_loses_nothing_answered() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("catalog.sqlite");
    let storage = dir.path().join("storage");
    // SQLite catches up with the journal 200 ms behind, so the kill lands
    // with answered changes that only the journal holds.
    let tuning = dir.path().join("tuning.toml");
    std::fs::write(&tuning, "[catalog]\njournal_gather_ms = 200\n").unwrap();
    let mut server = Server::start_with(
        dir.path(),
        &db,
        &storage,
        0,
        &["--config", tuning.to_str().unwrap()],
    );
    let addr = server.addr;
    let progress = Arc::new(AtomicUsize::new(0));
    let driver = {
        let progress = progress.clone();
        std::thread::spawn(move || drive(addr, progress))
    };
    let reached = wait_until(Duration::from_secs(120), || {
        progress.load(Ordering::Relaxed) >= KILL_AFTER
    });
    assert!(reached, "the driver made too little progress");
    server.kill();
    let told = driver.join().unwrap();
    assert!(
        told.answered >= KILL_AFTER && told.answered < OPS,
        "killed in the middle: {} answered",
        told.answered
    );

    server.start_again();
    let rows = catalog_rows(&db);
    let unsure: BTreeSet<&String> = told.unsure.iter().collect();
    let mut lost = Vec::new();
    let mut undone = Vec::new();
    for (name, exists) in &told.names {
        if unsure.contains(name) {
            continue;
        }
        match (exists, rows.contains_key(name)) {
            (true, false) => lost.push(name.clone()),
            (false, true) => undone.push(name.clone()),
            _ => {}
        }
    }
    assert!(lost.is_empty(), "answered and lost: {lost:?}");
    assert!(undone.is_empty(), "removed or renamed and back: {undone:?}");
    let phantoms: Vec<_> = rows
        .keys()
        .filter(|n| !told.names.contains_key(*n) && !unsure.contains(n))
        .collect();
    assert!(phantoms.is_empty(), "never created: {phantoms:?}");
    // Catalog and disk agree: every file row has its content file.
    let without: Vec<_> = rows
        .iter()
        .filter(|(_, p)| {
            !p.as_deref()
                .is_some_and(|p| std::path::Path::new(p).exists())
        })
        .collect();
    assert!(without.is_empty(), "rows without content: {without:?}");
    let log = server.log();
    let reconciled = log
        .lines()
        .rfind(|l| l.contains("catalog reconciled with the disk"))
        .expect("start-up reconciles");
    // The log is coloured: drop the escape sequences before reading it.
    let plain: String = reconciled
        .split('\x1b')
        .enumerate()
        .map(|(i, part)| match part.split_once('m') {
            Some((_, rest)) if i > 0 => rest,
            _ => part,
        })
        .collect();
    assert!(plain.contains("missing=0"), "{plain}");
    assert!(
        log.contains("replayed the catalog's intent journal"),
        "the kill left answered changes in the journal only"
    );

    // The server itself answers the same after the restart.
    let mut c = Nfs4Client::connect(addr, "crash-check").unwrap();
    let present: Vec<_> = told
        .names
        .iter()
        .filter(|(n, e)| **e && !unsure.contains(n))
        .map(|(n, _)| n)
        .collect();
    let gone: Vec<_> = told
        .names
        .iter()
        .filter(|(n, e)| !**e && !unsure.contains(n))
        .map(|(n, _)| n)
        .collect();
    assert!(!present.is_empty() && !gone.is_empty());
    for name in present.iter().step_by(50) {
        c.lookup(name).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    for name in gone.iter().step_by(50) {
        assert!(c.lookup(name).is_err(), "{name} is back");
    }
}
