use super::*;
use crate::config::CacheConfig;
use rusqlite::Connection;

/// A MarkBase-style database made by "another writer": integer ids, an
/// extra column and an extra table that must survive untouched.
fn foreign_db(path: &Path) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE file_nodes (node_id INTEGER PRIMARY KEY, parent_id INTEGER, label TEXT,
            node_type TEXT, aliases_json TEXT, file_size INTEGER, created_at INTEGER,
            updated_at INTEGER, color_tag TEXT);
         CREATE TABLE marks (id INTEGER PRIMARY KEY, note TEXT);
         INSERT INTO marks VALUES (1, 'keep me');
         INSERT INTO file_nodes VALUES (10, NULL, 'Shows', 'folder', '{}', 0, 1700000000, 1700000000, 'red');
         INSERT INTO file_nodes VALUES (11, 10, 'Pilot', 'folder', NULL, 0, 1700000000000, 1700000000000, NULL);
         INSERT INTO file_nodes VALUES (12, 11, 'cut.mov', 'file', '{\"path\":\"/nonexistent/cut.mov\"}', 123, 1700000000, 1700000005, NULL);
         INSERT INTO file_nodes VALUES (13, 11, 'cut.mov', 'file', '{}', 5, 1700000000, 1700000000, NULL);
         INSERT INTO file_nodes VALUES (14, 11, 'a/b', 'file', '{}', 1, 1700000000, 1700000000, NULL);
         INSERT INTO file_nodes VALUES (15, 11, '..', 'file', '{}', 1, 1700000000, 1700000000, NULL);
         INSERT INTO file_nodes VALUES (16, '', 'Loose', 'file', '{}', 0, 1700000000, 1700000000, NULL);",
    )
    .unwrap();
}

#[test]
fn existing_database_is_read_and_left_intact() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("u.sqlite");
    foreign_db(&db);
    let cat = Catalog::open(&db, &CacheConfig::default()).unwrap();
    let root = cat.listing(&NodeId::Root).unwrap();
    let root = root.read();
    let names: Vec<&str> = root.entries().map(|e| e.name.as_str()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"Shows") && names.contains(&"Loose"));
    let shows = cat.lookup(&NodeId::Root, "Shows").unwrap().unwrap();
    assert_eq!(shows.id, NodeId::Int(10));
    assert_eq!(shows.fileid, 10);
    let pilot = cat.lookup(&shows.id, "Pilot").unwrap().unwrap();
    // Milliseconds and seconds both come out as the same instant.
    assert_eq!(pilot.created_ns, shows.created_ns);
    let pilot_listing = cat.listing(&pilot.id).unwrap();
    let mut names: Vec<String> = pilot_listing
        .read()
        .entries()
        .map(|e| e.name.clone())
        .collect();
    names.sort();
    // Duplicates get a unique name; '/' and '..' become usable names.
    assert_eq!(names, vec![".._f", "a:b", "cut.mov", "cut.mov (d)"]);
    let cut = cat.lookup(&pilot.id, "cut.mov").unwrap().unwrap();
    assert_eq!(cut.size(), 123);
    assert_eq!(
        cut.meta().content.as_deref(),
        Some(Path::new("/nonexistent/cut.mov"))
    );
    assert_eq!(cat.parent_of(&cut).unwrap().id, pilot.id);
    assert_eq!(cat.parent_of(&shows).unwrap().id, NodeId::Root);
    drop(cat);
    let c = Connection::open(&db).unwrap();
    let note: String = c
        .query_row("SELECT note FROM marks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(note, "keep me");
    let tag: String = c
        .query_row(
            "SELECT color_tag FROM file_nodes WHERE node_id = 10",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tag, "red");
}

#[test]
fn missing_columns_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bad.sqlite");
    Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE file_nodes (node_id TEXT, label TEXT)")
        .unwrap();
    let err = Catalog::open(&db, &CacheConfig::default()).unwrap_err();
    assert!(format!("{err:#}").contains("parent_id"), "{err:#}");
}

/// A catalog the server served before `markbase_nfs_attrs` had its
/// creation-time and hidden columns: they are added, its rows kept.
#[test]
fn an_older_side_table_gains_the_new_columns() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.sqlite");
    foreign_db(&db);
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE markbase_nfs_attrs (node_id PRIMARY KEY, change INTEGER NOT NULL,
               mode INTEGER, owner TEXT, owner_group TEXT, modified_ns INTEGER, create_verifier BLOB);
             INSERT INTO markbase_nfs_attrs (node_id, change, mode) SELECT node_id, 7, 420 FROM file_nodes;",
        )
        .unwrap();
    let cat = Catalog::open(&db, &CacheConfig::default()).unwrap();
    let top = cat.listing(&NodeId::Root).unwrap();
    let id = top.read().entries().next().unwrap().id.clone();
    let node = cat.node(&id).unwrap();
    assert_eq!(node.meta().mode, Some(420));
    assert_eq!(node.meta().created_ns, None);
    assert!(!node.meta().hidden);
    cat.set_attrs(&node, |m| {
        m.created_ns = Some(5);
        m.hidden = true;
    })
    .wait()
    .unwrap();
    cat.flush().unwrap();
    let (created, hidden): (i64, i64) = Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT created_ns, hidden FROM markbase_nfs_attrs WHERE node_id = ?1",
            [id.to_sql()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((created, hidden), (5, 1));
}

#[test]
fn cached_nodes_and_listings_run_no_sql() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("u.sqlite");
    foreign_db(&db);
    let cat = Catalog::open(&db, &CacheConfig::default()).unwrap();
    let shows = cat.lookup(&NodeId::Root, "Shows").unwrap().unwrap();
    cat.listing(&shows.id).unwrap();
    let before = cat.statements_run();
    for _ in 0..100 {
        cat.lookup(&NodeId::Root, "Shows").unwrap().unwrap();
        cat.node(&shows.id).unwrap();
        cat.listing(&shows.id).unwrap();
    }
    assert_eq!(cat.statements_run(), before);
}

#[test]
fn readdir_cookies_survive_changes_to_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("u.sqlite");
    let conn = open_or_create(&db).unwrap();
    for i in 0..50 {
        schema::insert_node(
            &conn,
            &format!("id-{i}"),
            None,
            &format!("n{i}"),
            "file",
            None,
            0,
            1,
            1,
        )
        .unwrap();
    }
    let before: Vec<(u64, String)> = Catalog::open(&db, &CacheConfig::default())
        .unwrap()
        .listing(&NodeId::Root)
        .unwrap()
        .read()
        .after(0)
        .map(|(c, e)| (c, e.name.clone()))
        .collect();
    let cookie = before[20].0;
    let seen: Vec<String> = before[..=20].iter().map(|e| e.1.clone()).collect();
    // Remove one already-seen entry, add new ones.
    conn.execute("DELETE FROM file_nodes WHERE label = ?1", [&seen[3]])
        .unwrap();
    for i in 50..60 {
        schema::insert_node(
            &conn,
            &format!("id-{i}"),
            None,
            &format!("n{i}"),
            "file",
            None,
            0,
            1,
            1,
        )
        .unwrap();
    }
    let rest: Vec<String> = Catalog::open(&db, &CacheConfig::default())
        .unwrap()
        .listing(&NodeId::Root)
        .unwrap()
        .read()
        .after(cookie)
        .map(|(_, e)| e.name.clone())
        .collect();
    // Every old entry not yet seen is still delivered, none twice.
    for (_, name) in &before[21..] {
        assert!(rest.contains(name), "{name} lost after the change");
    }
    for s in &seen {
        assert!(!rest.contains(s), "{s} delivered twice");
    }
}

/// WRITEs of a stream tell the writer about their node once per batch
/// (`Node::queue_for_writer`); racing the writer's batches, the latest
/// size must still reach SQLite and every pin must be released.
#[test]
fn racing_data_writes_reach_the_database_and_leave_nothing_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("race.sqlite");
    let cat = Arc::new(
        Catalog::open_with(
            &db,
            &CacheConfig::default(),
            WriterConfig {
                interval: Duration::from_millis(1),
                max_batch: 4,
                journal: true,
                gather: Duration::from_millis(1),
            },
        )
        .unwrap(),
    );
    let id = cat.allocate_id();
    let (node, _, pending) = cat
        .create(
            &NodeId::Root,
            NewNode {
                id,
                kind: NodeKind::File,
                name: "race.mov".into(),
                content: Some(dir.path().join("race.mov")),
                mode: None,
                special: None,
                owner: None,
                owner_group: None,
                create_verifier: None,
            },
        )
        .unwrap();
    pending.wait().unwrap();
    let before = cat.writer_stats().nodes_written.load(Ordering::Relaxed);
    let writers: Vec<_> = (0..2u64)
        .map(|t| {
            let (cat, node) = (cat.clone(), node.clone());
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    cat.data_written(&node, (i * 2 + t + 1) * 4096);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    cat.flush().unwrap();
    let last = 40_000 * 4096;
    assert_eq!(node.size(), last);
    let c = Connection::open(&db).unwrap();
    let on_disk: u64 = c
        .query_row(
            "SELECT file_size FROM file_nodes WHERE label = 'race.mov'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(on_disk, last, "the latest size was not persisted");
    assert_eq!(cat.pinned(), (0, 0), "a pin outlived its write");
    // 40,000 writes, far fewer persisted node rows: the writer was told
    // once per batch, not once per write.
    let rows = cat.writer_stats().nodes_written.load(Ordering::Relaxed) - before;
    assert!((1..40_000).contains(&rows), "{rows}");
}

/// The foreign catalog, made in `dir` and opened with the change feed
/// polling every 5 ms.
fn foreign_catalog_fed(dir: &Path) -> (PathBuf, Arc<Catalog>) {
    let db = dir.join("u.sqlite");
    foreign_db(&db);
    let cat = Arc::new(Catalog::open(&db, &CacheConfig::default()).unwrap());
    cat.start_feed(Duration::from_millis(5), FeedMode::Triggers)
        .unwrap();
    (db, cat)
}

/// A connection of the MarkBase app's to the catalog.
fn app_connection(db: &Path) -> Connection {
    let app = Connection::open(db).unwrap();
    app.busy_timeout(Duration::from_secs(10)).unwrap();
    app
}

/// Waits (bounded) until the feed has applied `n` of the app's changes.
fn feed_applied(cat: &Catalog, n: u64) {
    let stats = cat.feed_stats().expect("feed running");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stats.applied.load(Ordering::Relaxed) < n {
        assert!(std::time::Instant::now() < deadline, "feed applied nothing");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_integer_id_the_app_took_is_never_given_to_a_create() {
    let dir = tempfile::tempdir().unwrap();
    let (db, cat) = foreign_catalog_fed(dir.path());
    // An app that counts its own ids, even below zero: what it took is
    // not handed out to a create.
    let app = app_connection(&db);
    app.execute_batch(
        "INSERT INTO file_nodes VALUES (17, 11, 'app-a.mov', 'file', '{}', 1, 1700000000, 1700000000, NULL);
         INSERT INTO file_nodes VALUES (-1, 11, 'app-b.mov', 'file', '{}', 2, 1700000000, 1700000000, NULL);",
    )
    .unwrap();
    feed_applied(&cat, 2);
    let id = cat.allocate_id();
    assert_eq!(id, NodeId::Int(-2), "below every id seen");
}

/// A create's row reaches SQLite after its reply; an app inserting in
/// between takes SQLite's next id (the largest plus one). The two must not
/// meet: the create's row would be written over the app's node.
#[test]
fn a_create_and_an_app_insert_before_its_row_reaches_sqlite_never_share_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let (db, cat) = foreign_catalog_fed(dir.path());
    let held = cat.hold_journal();
    let (ours, _, pending) = cat
        .create(&NodeId::Int(11), folder(&cat, "Take 3"))
        .unwrap();
    let app = app_connection(&db);
    app.execute(
        "INSERT INTO file_nodes (parent_id, label, node_type, aliases_json, file_size, created_at, updated_at)
         VALUES (11, 'app.mov', 'file', '{}', 1, 1700000000, 1700000000)",
        [],
    )
    .unwrap();
    let theirs = NodeId::Int(app.last_insert_rowid());
    drop(held);
    pending.wait().unwrap();
    cat.flush().unwrap();
    assert_ne!(ours.id, theirs);
    let label = |id: &NodeId| -> String {
        app.query_row(
            "SELECT label FROM file_nodes WHERE node_id = ?1",
            [id.to_sql()],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(label(&theirs), "app.mov", "the app's node was written over");
    assert_eq!(label(&ours.id), "Take 3");
}

#[test]
fn change_attributes_moved_by_the_app_never_go_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (db, cat) = foreign_catalog_fed(dir.path());
    let pilot = cat.node(&NodeId::Int(11)).unwrap();
    cat.listing(&pilot.id).unwrap();
    let cut = cat.node(&NodeId::Int(12)).unwrap();
    let (folder0, file0) = (pilot.change(), cut.change());
    // The app adds a child (the folder's own row stays as it was) and
    // changes a file's size without touching its times.
    let app = app_connection(&db);
    app.execute_batch(
        "INSERT INTO file_nodes VALUES (20, 11, 'new.mov', 'file', '{}', 7, 1700000000, 1700000000, NULL);
         UPDATE file_nodes SET file_size = 999 WHERE node_id = 12;",
    )
    .unwrap();
    feed_applied(&cat, 2);
    let (folder1, file1) = (pilot.change(), cut.change());
    assert!(folder1 > folder0 && file1 > file0);
    assert_eq!(cut.size(), 999);
    cat.flush().unwrap();
    drop((pilot, cut));
    drop(cat);

    // A client that cached the folder or file at the moved change must not
    // see an older one: it would keep what it cached before the app's edit.
    // (The feed thread may hold the last handle a moment longer, and with
    // it the catalog's lock: the reopen waits for it, bounded.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let cat = loop {
        match Catalog::open(&db, &CacheConfig::default()) {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("already served"), "{e:#}");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e:#}"),
        }
    };
    let pilot = cat.node(&NodeId::Int(11)).unwrap();
    let cut = cat.node(&NodeId::Int(12)).unwrap();
    assert!(
        pilot.change() > folder1,
        "folder change went back: {} after {folder1}",
        pilot.change()
    );
    assert!(
        cut.change() >= file1,
        "file change went back: {} after {file1}",
        cut.change()
    );
    assert!(cat.root().change() > folder1);
    // The app's row is as the app left it; ours holds only our table.
    let size: i64 = app
        .query_row(
            "SELECT file_size FROM file_nodes WHERE node_id = 12",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(size, 999);
}

#[test]
fn no_side_row_for_a_node_the_app_deleted_before_the_writer_ran() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("u.sqlite");
    foreign_db(&db);
    let cat = Catalog::open(&db, &CacheConfig::default()).unwrap();
    let cut = cat.node(&NodeId::Int(12)).unwrap();
    let app = app_connection(&db);
    app.execute("DELETE FROM file_nodes WHERE node_id = 12", [])
        .unwrap();
    // A WRITE's size change reaches the writer after the app's delete.
    cat.data_written(&cut, 4096);
    cat.flush().unwrap();
    let side: i64 = app
        .query_row(
            "SELECT COUNT(*) FROM markbase_nfs_attrs WHERE node_id = 12",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(side, 0, "an orphan side row would dress a later node 12");
}

/// A symlink kept in our table, in a catalog of integer ids: it reloads
/// as it was; once the app deletes its folder (while no server runs), the
/// next open drops it and its side row, as nothing can reach it.
#[test]
fn special_nodes_reload_and_go_with_their_folder() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("u.sqlite");
    foreign_db(&db);
    let cat = Catalog::open(&db, &CacheConfig::default()).unwrap();
    let new = NewNode {
        id: cat.allocate_special_id(),
        kind: NodeKind::Symlink,
        name: "latest".into(),
        content: None,
        mode: Some(0o777),
        special: Some(Special {
            target: b"cut.mov".to_vec(),
            rdev: (0, 0),
        }),
        owner: None,
        owner_group: None,
        create_verifier: None,
    };
    let (link, _, pending) = cat.create(&NodeId::Int(11), new).unwrap();
    pending.wait().unwrap();
    let id = link.id.clone();
    drop(link);
    drop(cat);

    let cat = Catalog::open(&db, &CacheConfig::default()).unwrap();
    let link = cat.lookup(&NodeId::Int(11), "latest").unwrap().unwrap();
    assert_eq!(
        (link.id.clone(), link.kind),
        (id.clone(), NodeKind::Symlink)
    );
    assert_eq!(link.meta().special.as_ref().unwrap().target, b"cut.mov");
    assert_eq!((link.size(), link.meta().mode), (7, Some(0o777)));
    drop(link);
    drop(cat);

    let app = Connection::open(&db).unwrap();
    app.execute(
        "DELETE FROM file_nodes WHERE node_id IN (11, 12, 13, 14, 15)",
        [],
    )
    .unwrap();
    let cat = Catalog::open(&db, &CacheConfig::default()).unwrap();
    assert!(matches!(cat.node(&id), Err(CatalogError::NotFound(_))));
    let count = |table: &str| -> i64 {
        app.query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE node_id = ?1"),
            [id.to_sql()],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(
        (count("markbase_nfs_specials"), count("markbase_nfs_attrs")),
        (0, 0)
    );
}

/// A file node as the writer journals it.
fn journaled_file(id: &str, label: &str, content: &Path, columns: Columns) -> journal::Entry {
    let id = journal::IdImage::Text(id.to_string());
    journal::Entry::Upsert(Box::new(journal::NodeImage {
        content: Some(content.to_path_buf()),
        change: 2_000_000_000,
        mode: Some(0o644),
        ..journal::NodeImage::of_file(id, None, label, columns)
    }))
}

fn label_of(db: &Path, id: &str) -> Option<String> {
    Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT label FROM file_nodes WHERE node_id = ?1",
            [id],
            |r| r.get(0),
        )
        .ok()
}

/// Opens the catalog (replaying its journal) and closes it again.
fn open_and_close(db: &Path) {
    Catalog::open(db, &CacheConfig::default())
        .unwrap()
        .shutdown();
}

/// A catalog `<stem>.sqlite` made (opened and closed) in `dir`, and the
/// content path of its node `<stem>-1` under `dir/store`.
fn made_catalog_and_content_path(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let db = dir.join(format!("{stem}.sqlite"));
    open_and_close(&db);
    (db, dir.join("store").join(format!("{stem}-1")))
}

/// Writes records to the journal as the writer would, SQLite having
/// applied up to `applied`.
fn journal_records(db: &Path, applied: u64, records: &[journal::Entry]) {
    let mut j = journal::Journal::open(&journal::path_for(db), applied).unwrap();
    for r in records {
        j.append(&journal::encode(std::slice::from_ref(r)).unwrap())
            .unwrap();
    }
}

#[test]
fn the_journal_is_replayed_once_and_a_torn_record_never() {
    let dir = tempfile::tempdir().unwrap();
    let (db, content) = made_catalog_and_content_path(dir.path(), "j");
    let file = |label: &str, cols| journaled_file("j-1", label, &content, cols);
    // What a crash leaves: a create and a rename answered (journaled),
    // neither in SQLite, and the new file's folder entry lost.
    journal_records(
        &db,
        0,
        &[
            file("a.mov", Columns::PLACE | Columns::SIZE),
            file("b.mov", Columns::PLACE),
        ],
    );
    assert_eq!(label_of(&db, "j-1"), None);

    let cat = Catalog::open(&db, &CacheConfig::default()).unwrap();
    assert_eq!(label_of(&db, "j-1").as_deref(), Some("b.mov"));
    assert!(content.exists(), "the lost content file is created again");
    assert_eq!(
        cat.lookup(&NodeId::Root, "b.mov").unwrap().unwrap().id,
        NodeId::text("j-1")
    );
    cat.shutdown();
    drop(cat);

    // The app renames the row; the records already applied stay applied.
    Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE file_nodes SET label = 'app.mov' WHERE node_id = 'j-1'",
            [],
        )
        .unwrap();
    open_and_close(&db);
    assert_eq!(label_of(&db, "j-1").as_deref(), Some("app.mov"));

    // A record torn by the crash (never answered) is not applied.
    journal_records(&db, 2, &[file("torn.mov", Columns::PLACE)]);
    let jpath = journal::path_for(&db);
    let mut bytes = std::fs::read(&jpath).unwrap();
    // The record at offset 0: a 24-byte header, then its payload.
    let len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    bytes[24 + len - 1] ^= 0xff;
    std::fs::write(&jpath, &bytes).unwrap();
    open_and_close(&db);
    assert_eq!(label_of(&db, "j-1").as_deref(), Some("app.mov"));

    // Whole, the next record is applied.
    journal_records(&db, 2, &[file("c.mov", Columns::PLACE)]);
    open_and_close(&db);
    assert_eq!(label_of(&db, "j-1").as_deref(), Some("c.mov"));
}

#[test]
fn a_namespace_change_is_answered_after_one_journal_record_and_reaches_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.sqlite");
    let cat = Catalog::open(&db, &CacheConfig::default()).unwrap();
    let (node, _, pending) = cat.create(&NodeId::Root, folder(&cat, "Reel 1")).unwrap();
    pending.wait().unwrap();
    let stats = cat.writer_stats();
    assert_eq!(stats.journal_records.load(Ordering::Relaxed), 1);
    cat.flush().unwrap();
    let label: String = Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT label FROM file_nodes WHERE node_id = ?1",
            [node.id.to_sql()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(label, "Reel 1");
    let applied: i64 = Connection::open(&db)
        .unwrap()
        .query_row("SELECT applied_seq FROM markbase_nfs_journal", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(applied, 1);
    // Idle, SQLite is made durable so the journal may start over.
    let t = std::time::Instant::now();
    while stats.durable_commits.load(Ordering::Relaxed) == 0
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stats.durable_commits.load(Ordering::Relaxed) >= 1);
}

#[test]
fn a_setattr_of_what_is_already_set_writes_no_journal_record() {
    // `cp -p` over an existing copy sets mode and times again, as do
    // clients that re-apply a folder's attributes: unchanged, they are
    // not a change to make durable.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.sqlite");
    let cat = Catalog::open(&db, &CacheConfig::default()).unwrap();
    let (node, _, pending) = cat.create(&NodeId::Root, folder(&cat, "Grades")).unwrap();
    pending.wait().unwrap();
    let stats = cat.writer_stats();
    let records = || stats.journal_records.load(Ordering::Relaxed);
    cat.set_attrs(&node, |m| m.mode = Some(0o750))
        .wait()
        .unwrap();
    assert_eq!(records(), 2, "a new mode is journaled");
    let (change, modified) = (node.change(), node.meta().modified_ns);
    cat.set_attrs(&node, |m| {
        m.mode = Some(0o750);
        m.modified_ns = modified;
    })
    .wait()
    .unwrap();
    assert_eq!(records(), 2, "the same mode and time again is no change");
    assert_eq!(node.change(), change, "nor a new change attribute");
    cat.set_attrs(&node, |m| m.modified_ns = modified + 1)
        .wait()
        .unwrap();
    assert_eq!(records(), 3, "a new time is journaled");
    assert!(node.change() > change);
}

fn folder(cat: &Catalog, name: &str) -> NewNode {
    NewNode {
        id: cat.allocate_id(),
        kind: NodeKind::Folder,
        name: name.into(),
        content: None,
        mode: None,
        special: None,
        owner: None,
        owner_group: None,
        create_verifier: None,
    }
}

fn labels_in_sqlite(db: &Path) -> Vec<String> {
    let conn = Connection::open(db).unwrap();
    let mut st = conn
        .prepare("SELECT label FROM file_nodes ORDER BY label")
        .unwrap();
    let rows = st.query_map([], |r| r.get(0)).unwrap();
    rows.map(|r| r.unwrap()).collect()
}

#[test]
fn changes_queued_before_a_leader_waits_share_one_journal_record() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.sqlite");
    let cat = Catalog::open(&db, &CacheConfig::default()).unwrap();
    let pendings: Vec<Pending> = (0..10)
        .map(|i| {
            let (_, _, p) = cat
                .create(&NodeId::Root, folder(&cat, &format!("Reel {i}")))
                .unwrap();
            p
        })
        .collect();
    // The first waiter leads: it journals all ten in one record.
    for p in pendings {
        p.wait().unwrap();
    }
    let stats = cat.writer_stats();
    assert_eq!(stats.journal_records.load(Ordering::Relaxed), 1);
    cat.flush().unwrap();
    let want: Vec<String> = (0..10).map(|i| format!("Reel {i}")).collect();
    assert_eq!(labels_in_sqlite(&db), want);
}

#[test]
fn a_change_nobody_waits_for_is_journaled_all_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.sqlite");
    let cat = Catalog::open(&db, &CacheConfig::default()).unwrap();
    let (_, _, pending) = cat.create(&NodeId::Root, folder(&cat, "Dailies")).unwrap();
    drop(pending);
    let stats = cat.writer_stats();
    let t = std::time::Instant::now();
    while stats.journal_records.load(Ordering::Relaxed) == 0
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(stats.journal_records.load(Ordering::Relaxed), 1);
    cat.flush().unwrap();
    assert_eq!(labels_in_sqlite(&db), vec!["Dailies".to_string()]);
}

#[test]
fn a_full_journal_region_does_not_wait_for_sqlites_synced_commit() {
    // The synced commit that lets a region be written over (and the
    // content folders' syncs before it) takes tens of milliseconds; with
    // one region every namespace change waited for it each time the
    // journal filled. Here it is held until the changes are answered.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.sqlite");
    let cat = Arc::new(Catalog::open(&db, &CacheConfig::default()).unwrap());
    let held = Arc::new((parking_lot::Mutex::new(true), parking_lot::Condvar::new()));
    let hook_held = held.clone();
    cat.before_durable(Box::new(move || {
        let (lock, cv) = &*hook_held;
        let mut h = lock.lock();
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while *h && !cv.wait_until(&mut h, until).timed_out() {}
        Ok(())
    }));
    // Fifteen records of ~400 KB (a client id's bytes as JSON numbers):
    // one and a half regions.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let writer = {
        let cat = cat.clone();
        std::thread::spawn(move || {
            for i in 0..15u8 {
                cat.record_nfs_client(&vec![100 + i; 100_000])
                    .wait()
                    .unwrap();
            }
            done_tx.send(()).unwrap();
        })
    };
    let answered = done_rx.recv_timeout(Duration::from_secs(30));
    let stats = cat.writer_stats();
    assert_eq!(
        stats.durable_commits.load(Ordering::Relaxed),
        0,
        "still held"
    );
    *held.0.lock() = false;
    held.1.notify_all();
    assert!(
        answered.is_ok(),
        "changes waited for the synced commit when a journal region filled"
    );
    writer.join().unwrap();
    cat.flush().unwrap();
    cat.shutdown();
    let clients = clients_in_sqlite(&db);
    assert_eq!(clients, 15);
    assert!(stats.durable_commits.load(Ordering::Relaxed) >= 1);
}

#[test]
fn a_crash_after_the_journal_changed_region_replays_both_regions_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (db, content) = made_catalog_and_content_path(dir.path(), "w");
    // What a crash leaves: region 0 full of records SQLite never applied
    // (~400 KB each), and the newest in region 1: a create, then a rename.
    let mut j = journal::Journal::open(&journal::path_for(&db), 0).unwrap();
    let client = |i: u8| journal::encode(&[journal::Entry::ClientUp(vec![100 + i; 100_000])]);
    let mut i = 0;
    while j.fits(client(i).unwrap().len()) {
        j.append(&client(i).unwrap()).unwrap();
        i += 1;
    }
    j.switch_region();
    for (label, cols) in [("a.mov", Columns::PLACE), ("b.mov", Columns::PLACE)] {
        let record = journaled_file("w-1", label, &content, cols);
        j.append(&journal::encode(&[record]).unwrap()).unwrap();
    }
    drop(j);
    open_and_close(&db);
    assert_eq!(
        label_of(&db, "w-1").as_deref(),
        Some("b.mov"),
        "region 1 applied, in order"
    );
    let clients = clients_in_sqlite(&db);
    assert_eq!(clients, i as i64, "every record of region 0 applied");
    assert!(i >= 10, "region 0 held {i} records");
}

fn clients_in_sqlite(db: &Path) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row("SELECT count(*) FROM markbase_nfs_clients", [], |r| {
            r.get(0)
        })
        .unwrap()
}
