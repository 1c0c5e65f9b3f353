//! The catalog is shared: the MarkBase app keeps committing to `file_nodes`
//! while clients use the mount. Its inserts, renames, moves, deletes and
//! size changes show to a client within a second of the commit, and the
//! server's own writes never undo them.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use markbase_nfs::catalog::FeedMode;
use markbase_nfs::nfs4::consts::{attr, Status};
use markbase_nfs::tools::client::{Create, Nfs4Client};

/// The MarkBase app: its own connection to the catalog.
fn app(db: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// Polls `check` until it holds; how long that took after `since`.
fn visible_within(limit: Duration, since: Instant, mut check: impl FnMut() -> bool) -> Duration {
    let deadline = since + limit;
    loop {
        if check() {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "not visible {limit:?} after the app's commit"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lookup_status(c: &mut Nfs4Client, path: &str) -> Result<Vec<u8>, u32> {
    c.lookup(path).map_err(|e| e.status().unwrap_or(u32::MAX))
}

fn storage(srv: &InProcess) -> PathBuf {
    srv.dir.path().join("users/demo.storage")
}

#[test]
fn the_apps_commits_show_on_the_mount_within_a_second() {
    let srv = InProcess::start();
    the_apps_commits_show_within(&srv, Duration::from_secs(1));
    // The server's own rows never linger in the feed.
    let app = app(&srv.dir.path().join("users/demo.sqlite"));
    srv.nfs.catalog().flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let left: i64 = app
        .query_row("SELECT COUNT(*) FROM markbase_nfs_changes", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(left, 0, "feed rows left behind");
}

/// `catalog.feed = "scan"`: no trigger of ours in the app's schema, and
/// its commits still show, found by re-reading what the server holds.
#[test]
fn without_triggers_the_apps_commits_show_by_rereading() {
    let srv = InProcess::start_with(|cfg| cfg.catalog.feed = FeedMode::Scan);
    let app = app(&srv.dir.path().join("users/demo.sqlite"));
    let ours: i64 = app
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'markbase_nfs_feed%' OR name = 'markbase_nfs_changes'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ours, 0, "scan mode leaves the app's schema alone");
    the_apps_commits_show_within(&srv, Duration::from_secs(1));
    let stats = srv.nfs.catalog().feed_stats().unwrap();
    assert!(stats.scanning.load(Ordering::Relaxed));
    assert!(stats.rescanned.load(Ordering::Relaxed) > 0);
    // The server's own commits are not taken for the app's: re-reading
    // after them finds nothing to apply, and undoes nothing.
    let applied = stats.applied.load(Ordering::Relaxed);
    let mut c = Nfs4Client::connect(srv.addr, "editor-2").unwrap();
    let dir = c.lookup("Projects").unwrap();
    for i in 0..20u64 {
        let f = c
            .open(
                &dir,
                &format!("take {i}.mov"),
                Create::Unchecked { mode: 0o644 },
                3,
            )
            .unwrap();
        c.write(&f, 0, &vec![7u8; 1000 + i as usize], 2).unwrap();
        c.close(&f).unwrap();
    }
    c.remove(&dir, "take 1.mov").unwrap();
    srv.nfs.catalog().flush().unwrap();
    let rescanned = stats.rescanned.load(Ordering::Relaxed);
    visible_within(Duration::from_secs(2), Instant::now(), || {
        stats.rescanned.load(Ordering::Relaxed) > rescanned + 2
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(stats.applied.load(Ordering::Relaxed), applied);
    let f = c.lookup("Projects/take 5.mov").unwrap();
    assert_eq!(size_of(&mut c, &f), 1005);
    assert_eq!(
        lookup_status(&mut c, "Projects/take 1.mov"),
        Err(Status::NoEnt.code())
    );
}

/// An app migration rebuilds `file_nodes` (new table, copy, drop, rename):
/// our triggers go with the old table. The feed puts them back, and what
/// the app changed meanwhile shows too.
#[test]
fn triggers_dropped_by_an_app_migration_are_put_back() {
    let srv = InProcess::start();
    let db = srv.dir.path().join("users/demo.sqlite");
    let mut c = Nfs4Client::connect(srv.addr, "editor").unwrap();
    c.lookup("Library/Notes café.txt").unwrap();
    let app = app(&db);
    // The table as the app declared it, under a new name.
    let create: String = app
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'file_nodes'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let create = create.replacen("file_nodes", "file_nodes_new", 1);
    let t = Instant::now();
    app.execute_batch(&format!(
        "BEGIN;
         {create};
         INSERT INTO file_nodes_new SELECT * FROM file_nodes;
         DROP TABLE file_nodes;
         ALTER TABLE file_nodes_new RENAME TO file_nodes;
         UPDATE file_nodes SET label = 'Notes (migrated).txt' WHERE node_id = 'demo-notes';
         COMMIT;"
    ))
    .unwrap();
    // The edit made with no trigger in place shows ...
    let took = visible_within(Duration::from_secs(2), t, || {
        lookup_status(&mut c, "Library/Notes (migrated).txt").is_ok()
    });
    eprintln!("migrated edit visible after {took:?}");
    let stats = srv.nfs.catalog().feed_stats().unwrap();
    assert_eq!(stats.reinstalls.load(Ordering::Relaxed), 1);
    assert!(!stats.scanning.load(Ordering::Relaxed));
    // ... and the triggers are back: the next edit comes through them.
    let t = Instant::now();
    app.execute(
        "UPDATE file_nodes SET label = 'Notes v3.txt' WHERE node_id = 'demo-notes'",
        [],
    )
    .unwrap();
    visible_within(Duration::from_secs(1), t, || {
        lookup_status(&mut c, "Library/Notes v3.txt").is_ok()
    });
    let triggers: i64 = app
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'markbase_nfs_feed%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(triggers, 3);
}

/// The app's insert, rename, move, size change and delete, each visible
/// through the client within `limit` of the commit.
fn the_apps_commits_show_within(srv: &InProcess, limit: Duration) {
    let db = srv.dir.path().join("users/demo.sqlite");
    let mut c = Nfs4Client::connect(srv.addr, "editor").unwrap();
    // The client has the folders loaded (listings cached by the server).
    c.lookup("Library/Notes café.txt").unwrap();
    let readme = c.lookup("Projects/README.txt").unwrap();
    assert_eq!(
        lookup_status(&mut c, "Library/Shot list.txt"),
        Err(Status::NoEnt.code())
    );
    let app = app(&db);
    let mut took = Vec::new();

    // An insert, with its content.
    let content = storage(srv).join("app-shot-list.txt");
    std::fs::write(&content, b"1. wide\n2. close\n").unwrap();
    let t = Instant::now();
    app.execute(
        "INSERT INTO file_nodes (node_id, parent_id, label, node_type, aliases_json, file_size, created_at, updated_at)
         VALUES ('app-1', 'demo-library', 'Shot list.txt', 'file', ?1, 17, 1700000000, 1700000000)",
        [serde_json::json!({ "path": content }).to_string()],
    )
    .unwrap();
    took.push(visible_within(limit, t, || {
        lookup_status(&mut c, "Library/Shot list.txt").is_ok()
    }));
    let fh = c.lookup("Library/Shot list.txt").unwrap();
    let root = c.lookup("Library").unwrap();
    let f = c.open(&root, "Shot list.txt", Create::No, 1).unwrap();
    assert_eq!(c.read(&f, 0, 100).unwrap().0, b"1. wide\n2. close\n");
    c.close(&f).unwrap();

    // A rename.
    let t = Instant::now();
    app.execute(
        "UPDATE file_nodes SET label = 'Notes v2.txt' WHERE node_id = 'demo-notes'",
        [],
    )
    .unwrap();
    took.push(visible_within(limit, t, || {
        lookup_status(&mut c, "Library/Notes v2.txt").is_ok()
    }));
    assert_eq!(
        lookup_status(&mut c, "Library/Notes café.txt"),
        Err(Status::NoEnt.code())
    );

    // A move between folders: same node, same handle.
    let t = Instant::now();
    app.execute(
        "UPDATE file_nodes SET parent_id = 'demo-library' WHERE node_id = 'demo-readme'",
        [],
    )
    .unwrap();
    took.push(visible_within(limit, t, || {
        lookup_status(&mut c, "Library/README.txt").is_ok()
    }));
    assert_eq!(c.lookup("Library/README.txt").unwrap(), readme);
    assert_eq!(
        lookup_status(&mut c, "Projects/README.txt"),
        Err(Status::NoEnt.code())
    );

    // A size change (the app rewrote the content).
    std::fs::write(&content, b"1. wide\n2. close\n3. insert\n").unwrap();
    let t = Instant::now();
    app.execute(
        "UPDATE file_nodes SET file_size = 27, updated_at = 1700000100 WHERE node_id = 'app-1'",
        [],
    )
    .unwrap();
    took.push(visible_within(limit, t, || size_of(&mut c, &fh) == 27));

    // A delete.
    let t = Instant::now();
    app.execute("DELETE FROM file_nodes WHERE node_id = 'app-1'", [])
        .unwrap();
    took.push(visible_within(limit, t, || {
        lookup_status(&mut c, "Library/Shot list.txt") == Err(Status::NoEnt.code())
    }));
    eprintln!("visible after {took:?}");
}

/// The app renames a file while a client streams WRITEs into it: the
/// catalog ends with the app's label and the client's bytes and size, and
/// nothing else of the row changed.
#[test]
fn an_app_rename_during_a_write_stream_is_kept() {
    let srv = InProcess::start_with(|cfg| cfg.catalog.writer_interval_ms = 20);
    let db = srv.dir.path().join("users/demo.sqlite");
    let mut c = Nfs4Client::connect(srv.addr, "render").unwrap();
    let dir = c.lookup("Projects").unwrap();
    let f = c
        .open(&dir, "render.mov", Create::Unchecked { mode: 0o644 }, 3)
        .unwrap();
    let app = app(&db);
    // The create reaches SQLite a moment after its reply (the journal is
    // what the reply promised).
    let mut id = String::new();
    wait_until(Duration::from_secs(5), || {
        app.query_row(
            "SELECT node_id FROM file_nodes WHERE label = 'render.mov'",
            [],
            |r| r.get(0),
        )
        .map(|v| id = v)
        .is_ok()
    });
    assert!(!id.is_empty(), "the app sees the new file");
    app.execute(
        "UPDATE file_nodes SET aliases_json = json_set(aliases_json, '$.color', 'red') WHERE node_id = ?1",
        [&id],
    )
    .unwrap();
    let chunk = vec![0x42u8; 256 << 10];
    let writes = 64u64;
    for i in 0..writes {
        c.write(&f, i * chunk.len() as u64, &chunk, 0).unwrap();
        if i == writes / 2 {
            app.execute(
                "UPDATE file_nodes SET label = 'Final render.mov' WHERE node_id = ?1",
                [&id],
            )
            .unwrap();
        }
        // Let the writer persist sizes between WRITEs now and then.
        if i % 8 == 0 {
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    c.commit(&f.fh).unwrap();
    c.close(&f).unwrap();
    srv.nfs.catalog().flush().unwrap();
    let (label, size, aliases): (String, i64, String) = app
        .query_row(
            "SELECT label, file_size, aliases_json FROM file_nodes WHERE node_id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(label, "Final render.mov");
    assert_eq!(size, (writes * chunk.len() as u64) as i64);
    let v: serde_json::Value = serde_json::from_str(&aliases).unwrap();
    assert_eq!(v["color"], "red", "{aliases}");
    // And the client sees the app's name.
    visible_within(Duration::from_secs(1), Instant::now(), || {
        lookup_status(&mut c, "Projects/Final render.mov").is_ok()
    });
}

/// One server per catalog: a second one is refused with a clear message.
#[test]
fn a_second_server_on_the_same_catalog_is_refused() {
    let srv = InProcess::start();
    let db = srv.dir.path().join("users/demo.sqlite");
    let err = markbase_nfs::catalog::Catalog::open(&db, &Default::default()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("already served by another markbase-nfs"),
        "{msg}"
    );
    drop(srv);
    markbase_nfs::catalog::Catalog::open(&db, &Default::default()).expect("free again");
}

/// A file the app deletes while a client has it open keeps serving that
/// open (READ, WRITE, CLOSE); after CLOSE its handle is stale.
#[test]
fn an_open_file_the_app_deletes_serves_until_close() {
    let srv = InProcess::start();
    let db = srv.dir.path().join("users/demo.sqlite");
    let mut c = Nfs4Client::connect(srv.addr, "player").unwrap();
    let dir = c.lookup("Library").unwrap();
    let f = c.open(&dir, "Notes café.txt", Create::No, 3).unwrap();
    let before = c.read(&f, 0, 100).unwrap().0;
    let app = app(&db);
    let t = Instant::now();
    app.execute("DELETE FROM file_nodes WHERE node_id = 'demo-notes'", [])
        .unwrap();
    visible_within(Duration::from_secs(1), t, || {
        lookup_status(&mut c, "Library/Notes café.txt") == Err(Status::NoEnt.code())
    });
    assert_eq!(c.read(&f, 0, 100).unwrap().0, before);
    c.write(&f, before.len() as u64, b"+", 2).unwrap();
    c.close(&f).unwrap();
    let stale = c.compound(
        &markbase_nfs::tools::client::CompoundArgs::new()
            .putfh(&f.fh)
            .getattr(&[attr::SIZE]),
    );
    let status = match stale {
        Ok(body) => Nfs4Client::results(&body)
            .next(markbase_nfs::nfs4::consts::op::PUTFH)
            .err()
            .and_then(|e| e.status()),
        Err(e) => e.status(),
    };
    assert_eq!(status, Some(Status::Stale.code()));
}
