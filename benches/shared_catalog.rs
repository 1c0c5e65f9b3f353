//! The shared catalog at scale, on a 1,000,000-node catalog (1,000
//! folders of 1,000 nodes), all in one run:
//!
//! - the delay from the MarkBase app's commit (a rename) to a client's
//!   LOOKUP finding the new name, p50 / p99 / max over 1,000 changes
//!   (goal p99 ≤ 250 ms);
//! - what an app bulk insert of 100,000 nodes (one transaction) costs the
//!   app with the feed's triggers and without them, alternating;
//! - a 1 MiB × 16 UNSTABLE WRITE stream alone and while the app inserts
//!   100,000 nodes that the feed applies, alternating (goal ≥ 0.95×);
//! - the commit-to-visible delay without triggers (`catalog.feed =
//!   "scan"`), with all 1,000 folder listings held.
//!
//! Storage is on the real disk (under target/), the server in-process.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use markbase_nfs::tools::client::{Create, Nfs4Client, WriteStream};
use rusqlite::{params, Connection};

#[path = "support/server.rs"]
mod server;
use server::start_server;

const FOLDERS: usize = 1_000;
const PER_FOLDER: usize = 1_000;
const CHANGES: usize = 1_000;
/// Renames timed in scan mode (each waits for passes over 1,000 folders).
const SCAN_CHANGES: usize = 100;
const BULK: usize = 100_000;
const ROUNDS: usize = 3;
const STREAM: u64 = 256 << 20;

/// `file_nodes` rows only (no content files): folders f0…f999 at the top,
/// each with 1,000 file nodes.
fn build_catalog(db: &std::path::Path) {
    let mut conn = markbase_nfs::catalog::open_or_create(db).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut st = tx
            .prepare(
                "INSERT INTO file_nodes (node_id, parent_id, label, node_type, aliases_json, file_size, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, '{}', 0, 1700000000, 1700000000)",
            )
            .unwrap();
        for f in 0..FOLDERS {
            let folder = format!("f{f}");
            st.execute(params![folder, None::<String>, folder, "folder"])
                .unwrap();
            for n in 0..PER_FOLDER - 1 {
                st.execute(params![
                    format!("n{f}-{n}"),
                    folder,
                    format!("clip {n}.mov"),
                    "file"
                ])
                .unwrap();
            }
        }
    }
    tx.commit().unwrap();
}

/// The app's bulk insert of `BULK` nodes into a new folder; its time.
fn bulk_insert(app: &mut Connection, tag: &str) -> Duration {
    let t = Instant::now();
    let tx = app.transaction().unwrap();
    {
        let mut st = tx
            .prepare(
                "INSERT INTO file_nodes (node_id, parent_id, label, node_type, aliases_json, file_size, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'file', '{}', 0, 1700000000, 1700000000)",
            )
            .unwrap();
        tx.execute(
            "INSERT INTO file_nodes (node_id, parent_id, label, node_type, aliases_json, file_size, created_at, updated_at)
             VALUES (?1, NULL, ?1, 'folder', '{}', 0, 1700000000, 1700000000)",
            [tag],
        )
        .unwrap();
        for i in 0..BULK {
            st.execute(params![
                format!("{tag}-{i}"),
                tag,
                format!("frame {i:06}.dpx")
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    t.elapsed()
}

/// The app renames node `n` of folder `folder` to `new`; how long until the
/// client's LOOKUP finds it (polling every `pause`, at most 60 s).
fn rename_until_visible(
    app: &Connection,
    client: &mut Nfs4Client,
    folder: usize,
    n: usize,
    new: &str,
    pause: Duration,
) -> Duration {
    let t = Instant::now();
    app.execute(
        "UPDATE file_nodes SET label = ?1 WHERE node_id = ?2",
        params![new, format!("n{folder}-{n}")],
    )
    .unwrap();
    let path = format!("f{folder}/{new}");
    while client.lookup(&path).is_err() {
        assert!(t.elapsed() < Duration::from_secs(60), "{path} never showed");
        std::thread::sleep(pause);
    }
    t.elapsed()
}

fn stream_mbps(client: &mut Nfs4Client, root: &[u8], name: &str) -> f64 {
    let f = client
        .open(root, name, Create::Unchecked { mode: 0o644 }, 3)
        .unwrap();
    let mut stream = WriteStream::new(&client.rpc, &f, 1 << 20, 0);
    let t = Instant::now();
    stream.write(&mut client.rpc, 0, STREAM, 16).unwrap();
    let mbps = STREAM as f64 / t.elapsed().as_secs_f64() / 1e6;
    client.close(&f).unwrap();
    client.remove(root, name).unwrap();
    mbps
}

fn min_med_max(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("shared-catalog-bench");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let db = base.join("bench.sqlite");
    let t = Instant::now();
    build_catalog(&db);
    println!(
        "catalog of {} nodes built in {:.1} s",
        FOLDERS * PER_FOLDER,
        t.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // SHARED_CATALOG_BENCH=scan runs the scan-mode part alone.
    if std::env::var("SHARED_CATALOG_BENCH").as_deref() != Ok("scan") {
        with_triggers(&base, &db, &rt);
    }
    without_triggers(&base, &db, &rt);
}

/// The feed's cost to the app, its delay, and a stream beside the app.
fn with_triggers(base: &std::path::Path, db: &std::path::Path, rt: &tokio::runtime::Runtime) {
    // The app's bulk insert with and without the triggers, alternating, on
    // two copies of the catalog (no server: the cost to the app alone).
    let plain = base.join("plain.sqlite");
    let fed = base.join("fed.sqlite");
    std::fs::copy(db, &plain).unwrap();
    std::fs::copy(db, &fed).unwrap();
    {
        // The feed's triggers go in when serving starts.
        let c = std::sync::Arc::new(
            markbase_nfs::catalog::Catalog::open(&fed, &Default::default()).unwrap(),
        );
        c.start_feed(
            Duration::from_millis(10),
            markbase_nfs::catalog::FeedMode::Triggers,
        )
        .unwrap();
    }
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let mut p = Connection::open(&plain).unwrap();
        without.push(bulk_insert(&mut p, &format!("bulk{round}")).as_secs_f64() * 1e3);
        let mut f = Connection::open(&fed).unwrap();
        with.push(bulk_insert(&mut f, &format!("bulk{round}")).as_secs_f64() * 1e3);
    }
    let (a, b) = (min_med_max(&mut without), min_med_max(&mut with));
    println!(
        "app inserts {BULK} nodes: without triggers min {:.0} median {:.0} max {:.0} ms; with min {:.0} median {:.0} max {:.0} ms ({:.2}x)",
        a.0, a.1, a.2, b.0, b.1, b.2, b.1 / a.1
    );
    let _ = std::fs::remove_file(&plain);
    let _ = std::fs::remove_file(&fed);

    let t = Instant::now();
    let (addr, nfs) = start_server(rt, base, |_| {});
    println!("server open on it in {:.1} s", t.elapsed().as_secs_f64());
    let mut client = Nfs4Client::connect(addr, "bench-editor").unwrap();
    let root = client.lookup("").unwrap();
    let app = Connection::open(db).unwrap();
    app.busy_timeout(Duration::from_secs(30)).unwrap();

    // Delay: the app renames a node of a folder the client has looked in;
    // the client looks up the new name until it is there.
    let mut delay = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for i in 0..CHANGES {
        let folder = i % FOLDERS;
        let n = i % (PER_FOLDER - 1);
        client
            .lookup(&format!("f{folder}/clip {n}.mov"))
            .expect("the node before the rename");
        let new = format!("renamed {i}.mov");
        let took = rename_until_visible(&app, &mut client, folder, n, &new, Duration::ZERO);
        delay.record(took.as_micros() as u64).unwrap();
    }
    println!(
        "commit to visible, {CHANGES} renames: p50 {:.1}  p99 {:.1}  max {:.1} ms",
        delay.value_at_quantile(0.5) as f64 / 1e3,
        delay.value_at_quantile(0.99) as f64 / 1e3,
        delay.max() as f64 / 1e3
    );

    // A WRITE stream alone and while the app bulk-inserts, alternating.
    let (mut alone, mut beside, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let a = stream_mbps(&mut client, &root, &format!("alone-{round}.mov"));
        let inserter = {
            let db = db.to_path_buf();
            std::thread::spawn(move || {
                let mut app = Connection::open(&db).unwrap();
                app.busy_timeout(Duration::from_secs(30)).unwrap();
                bulk_insert(&mut app, &format!("beside{round}"))
            })
        };
        let b = stream_mbps(&mut client, &root, &format!("beside-{round}.mov"));
        let took = inserter.join().unwrap();
        alone.push(a);
        beside.push(b);
        ratio.push(b / a);
        println!(
            "round {round}: stream alone {a:.0} MB/s, beside the app's insert {b:.0} MB/s ({:.2}); insert took {:.0} ms",
            b / a,
            took.as_secs_f64() * 1e3
        );
    }
    let (r0, r1, r2) = min_med_max(&mut ratio);
    println!("stream beside / alone: min {r0:.2} median {r1:.2} max {r2:.2}");
    if let Some(s) = nfs.catalog().feed_stats() {
        println!(
            "feed: {} rows applied",
            s.applied.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}

/// The delay without triggers.
fn without_triggers(base: &std::path::Path, db: &std::path::Path, rt: &tokio::runtime::Runtime) {
    // Without triggers (`catalog.feed = "scan"`), on a copy of the catalog
    // (the triggers' server keeps the first): the same renames, with every
    // folder's listing held, so each pass re-reads all 1,000,000 rows.
    let scan_dir = base.join("scan");
    std::fs::create_dir_all(&scan_dir).unwrap();
    std::fs::copy(db, scan_dir.join("bench.sqlite")).unwrap();
    let (addr, nfs) = start_server(rt, &scan_dir, |cfg| {
        cfg.catalog.feed = markbase_nfs::catalog::FeedMode::Scan;
    });
    let mut client = Nfs4Client::connect(addr, "bench-editor-scan").unwrap();
    for folder in 0..FOLDERS {
        // Found or not, the folder's listing is now held.
        let _ = client.lookup(&format!("f{folder}/clip 998.mov"));
    }
    let app = Connection::open(scan_dir.join("bench.sqlite")).unwrap();
    app.busy_timeout(Duration::from_secs(30)).unwrap();
    let mut delay = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for i in 0..SCAN_CHANGES {
        let folder = (i * 7) % FOLDERS;
        let n = i % (PER_FOLDER - 2);
        let new = format!("scanned {i}.mov");
        let took =
            rename_until_visible(&app, &mut client, folder, n, &new, Duration::from_millis(5));
        delay.record(took.as_micros() as u64).unwrap();
    }
    let stats = nfs.catalog().feed_stats().unwrap();
    println!(
        "scan mode, {FOLDERS} folder listings held, {SCAN_CHANGES} renames: p50 {:.1}  p99 {:.1}  max {:.1} ms; {} folders and nodes re-read",
        delay.value_at_quantile(0.5) as f64 / 1e3,
        delay.value_at_quantile(0.99) as f64 / 1e3,
        delay.max() as f64 / 1e3,
        stats.rescanned.load(std::sync::atomic::Ordering::Relaxed)
    );
}
