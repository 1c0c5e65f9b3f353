//! The change feed: how the server learns what the MarkBase app commits to
//! `file_nodes` while the volume is mounted, without scanning the table.
//!
//! Triggers of ours (installed idempotently at open) append one row per
//! inserted, updated or deleted node to `markbase_nfs_changes`. A thread
//! with its own read connection polls `PRAGMA data_version` — it moves when
//! another connection commits — and on a move reads the rows after the last
//! one applied, hands each to the catalog, and deletes what it applied.
//! The server's own writer deletes the rows its transaction added before
//! committing, so its changes never come back through the feed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};

use super::node::NodeId;
use super::Catalog;

/// The feed's table and triggers. Ours: the app's table gains triggers, no
/// columns, and its rows are never rewritten.
const INSTALL: &str = "
CREATE TABLE IF NOT EXISTS markbase_nfs_changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id,
    old_parent,
    new_parent
);
CREATE TRIGGER IF NOT EXISTS markbase_nfs_feed_insert AFTER INSERT ON file_nodes BEGIN
    INSERT INTO markbase_nfs_changes (node_id, old_parent, new_parent)
    VALUES (NEW.node_id, NULL, NEW.parent_id);
END;
CREATE TRIGGER IF NOT EXISTS markbase_nfs_feed_update AFTER UPDATE ON file_nodes BEGIN
    INSERT INTO markbase_nfs_changes (node_id, old_parent, new_parent)
    VALUES (NEW.node_id, OLD.parent_id, NEW.parent_id);
END;
CREATE TRIGGER IF NOT EXISTS markbase_nfs_feed_delete AFTER DELETE ON file_nodes BEGIN
    INSERT INTO markbase_nfs_changes (node_id, old_parent, new_parent)
    VALUES (OLD.node_id, OLD.parent_id, NULL);
END;
";

/// `seq` is AUTOINCREMENT: the feed deletes the rows it applied, and a
/// plain rowid would then start again below the last one read.
///
/// Most feed rows applied per poll (the rest on the next one).
const BATCH: usize = 10_000;

/// Installs the table and triggers; false when the catalog cannot take
/// them (read-only): the server then sees app changes only after restart.
pub(crate) fn install(conn: &Connection) -> bool {
    match conn.execute_batch(INSTALL) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "no change feed (the catalog cannot take our triggers): the MarkBase app's edits show after a restart"
            );
            false
        }
    }
}

/// The newest feed row: where the writer's own rows start, and where a
/// fresh server starts reading (older edits are in the rows it loads).
pub(crate) fn newest(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM markbase_nfs_changes",
        [],
        |r| r.get(0),
    )
}

/// One row of the feed.
#[derive(Debug, Clone)]
pub struct FeedChange {
    pub node: NodeId,
    /// The parent before the change (None: inserted, or top level).
    pub old_parent: Option<NodeId>,
    /// The parent after it (None: deleted, or top level).
    pub new_parent: Option<NodeId>,
}

/// What the feed has done, for the operator and tests.
#[derive(Debug, Default)]
pub struct FeedStats {
    pub applied: AtomicU64,
    pub polls: AtomicU64,
}

/// The polling thread.
pub(crate) struct Feed {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub stats: Arc<FeedStats>,
}

impl Feed {
    /// Starts polling `db` every `every` for changes after `after`.
    pub fn start(
        catalog: Weak<Catalog>,
        db: &std::path::Path,
        after: i64,
        every: Duration,
    ) -> anyhow::Result<Feed> {
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(FeedStats::default());
        let (s, st) = (stop.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("catalog-feed".into())
            .spawn(move || poll_loop(conn, catalog, after, every, s, st))?;
        Ok(Feed {
            stop,
            thread: Mutex::new(Some(thread)),
            stats,
        })
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().take() {
            // The last handle on the catalog may be the feed's own, dropped
            // on its thread: that thread ends by itself (`stop` is set).
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

fn poll_loop(
    conn: Connection,
    catalog: Weak<Catalog>,
    mut last: i64,
    every: Duration,
    stop: Arc<AtomicBool>,
    stats: Arc<FeedStats>,
) {
    let mut version: Option<i64> = None;
    let mut failing_since: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(every);
        let Some(catalog) = catalog.upgrade() else {
            return;
        };
        stats.polls.fetch_add(1, Ordering::Relaxed);
        let v: rusqlite::Result<i64> = conn.query_row("PRAGMA data_version", [], |r| r.get(0));
        let moved = match (&v, version) {
            (Ok(v), Some(old)) => *v != old,
            _ => true,
        };
        if let Ok(v) = v {
            version = Some(v);
        }
        if !moved {
            continue;
        }
        match read_after(&conn, last) {
            Ok(rows) => {
                failing_since = None;
                if rows.is_empty() {
                    continue;
                }
                let upto = rows.last().map(|r| r.0).unwrap_or(last);
                for (_, change) in &rows {
                    catalog.apply_external(change);
                }
                stats
                    .applied
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                last = upto;
                // Applied: the rows can go (a full batch: read on at once).
                if let Err(e) =
                    conn.execute("DELETE FROM markbase_nfs_changes WHERE seq <= ?1", [last])
                {
                    tracing::debug!(error = %e, "feed rows not pruned yet");
                }
                if rows.len() == BATCH {
                    version = None;
                }
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(5) {
                    tracing::warn!(error = %e, "reading the change feed keeps failing");
                    failing_since = Some(Instant::now());
                }
                version = None;
            }
        }
    }
}

fn read_after(conn: &Connection, last: i64) -> rusqlite::Result<Vec<(i64, FeedChange)>> {
    let mut st = conn.prepare_cached(
        "SELECT seq, node_id, old_parent, new_parent FROM markbase_nfs_changes
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = st.query_map(rusqlite::params![last, BATCH as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            FeedChange {
                node: NodeId::from_sql(r.get_ref(1)?).unwrap_or(NodeId::Int(0)),
                old_parent: NodeId::from_sql(r.get_ref(2)?),
                new_parent: NodeId::from_sql(r.get_ref(3)?),
            },
        ))
    })?;
    rows.collect()
}
