//! The change feed: how the server learns what the MarkBase app commits to
//! `file_nodes` while the volume is mounted, without scanning the table.
//!
//! Triggers of ours (installed idempotently when the feed starts) append
//! one row per inserted, updated or deleted node to `markbase_nfs_changes`.
//! A thread with its own read connection polls `PRAGMA data_version` — it
//! moves when another connection commits — and on a move reads the rows
//! after the last one applied, hands each to the catalog, and deletes what
//! it applied. The server's own writer deletes the rows its transaction
//! added before committing, so its changes never come back through the feed.
//!
//! An app migration that rebuilds `file_nodes` drops our triggers: the
//! thread notices (`PRAGMA schema_version` moved, a trigger is gone),
//! reinstalls them and re-reads what the server holds for what it missed.
//! Where triggers cannot be installed, or the operator keeps the app's
//! schema untouched (`catalog.feed = "scan"`), the thread re-reads the
//! folders and nodes the server holds instead ([`super::rescan`]), a
//! bounded share per poll.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};

use super::node::NodeId;
use super::rescan::{Fingerprints, ScanCycle};
use super::Catalog;

/// How the server learns of the app's commits (`catalog.feed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedMode {
    /// Our triggers on `file_nodes` feed our own table (the default).
    Triggers,
    /// No triggers: what the server holds is re-read after each commit.
    Scan,
}

/// Names of our triggers, to tell whether an app migration dropped one.
const TRIGGERS: [&str; 3] = [
    "markbase_nfs_feed_insert",
    "markbase_nfs_feed_update",
    "markbase_nfs_feed_delete",
];

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
/// them (read-only): the feed then re-reads what the server holds.
pub(crate) fn install(conn: &Connection) -> bool {
    match conn.execute_batch(INSTALL) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "the catalog cannot take the change feed's triggers: the MarkBase app's edits are found by re-reading the folders the server holds (slower to show)"
            );
            false
        }
    }
}

/// Removes our triggers and table (`catalog.feed = "scan"`): the app's
/// schema is left as the app made it.
pub(crate) fn uninstall(conn: &Connection) {
    let mut sql: String = TRIGGERS
        .iter()
        .map(|t| format!("DROP TRIGGER IF EXISTS {t};"))
        .collect();
    sql.push_str("DROP TABLE IF EXISTS markbase_nfs_changes;");
    match conn.execute_batch(&sql) {
        Ok(()) => tracing::info!("change feed by re-reading held folders (catalog.feed = \"scan\"); no triggers of ours in the catalog"),
        Err(e) => tracing::warn!(error = %e, "removing the change feed's triggers"),
    }
}

/// Whether all our triggers and our table are there.
fn installed(conn: &Connection) -> rusqlite::Result<(bool, bool)> {
    let triggers: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name IN (?1, ?2, ?3)",
        TRIGGERS,
        |r| r.get(0),
    )?;
    let table: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'markbase_nfs_changes'",
        [],
        |r| r.get(0),
    )?;
    Ok((triggers == TRIGGERS.len() as i64, table == 1))
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
    /// Changes applied (feed rows, or differences a re-read found).
    pub applied: AtomicU64,
    pub polls: AtomicU64,
    /// Folders and nodes re-read (scan mode, or after a reinstall).
    pub rescanned: AtomicU64,
    /// The feed runs by re-reading (no triggers).
    pub scanning: AtomicBool,
    /// Times the triggers were found gone and put back.
    pub reinstalls: AtomicU64,
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
        mode: FeedMode,
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
            .spawn(move || {
                Poller {
                    conn,
                    catalog,
                    mode,
                    last: after,
                    schema: None,
                    cycle: None,
                    again: false,
                    prints: Fingerprints::default(),
                    stats: st,
                }
                .run(every, s)
            })?;
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

/// Most folders and nodes (outside those folders) re-read per poll while a
/// scan cycle runs, and the most time spent on them.
const RESCAN_PER_POLL: (usize, usize) = (1024, 1024);
const RESCAN_BUDGET: Duration = Duration::from_millis(20);

/// The polling thread's state.
struct Poller {
    conn: Connection,
    catalog: Weak<Catalog>,
    mode: FeedMode,
    /// The last feed row applied.
    last: i64,
    /// `PRAGMA schema_version` when the triggers were last checked.
    schema: Option<i64>,
    /// A pass over what the server holds, under way.
    cycle: Option<ScanCycle>,
    /// A commit came during the cycle: another one follows.
    again: bool,
    prints: Fingerprints,
    stats: Arc<FeedStats>,
}

impl Poller {
    fn run(mut self, every: Duration, stop: Arc<AtomicBool>) {
        let mut version: Option<i64> = None;
        let mut failing_since: Option<Instant> = None;
        self.stats
            .scanning
            .store(self.mode == FeedMode::Scan, Ordering::Relaxed);
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(every);
            let Some(catalog) = self.catalog.upgrade() else {
                return;
            };
            self.stats.polls.fetch_add(1, Ordering::Relaxed);
            let v: rusqlite::Result<i64> =
                self.conn.query_row("PRAGMA data_version", [], |r| r.get(0));
            let moved = match (&v, version) {
                (Ok(v), Some(old)) => *v != old,
                _ => true,
            };
            if let Ok(v) = v {
                version = Some(v);
            }
            if moved {
                let read = match self.mode {
                    FeedMode::Triggers => {
                        self.keep_triggers(&catalog);
                        self.read_rows(&catalog)
                    }
                    FeedMode::Scan => {
                        self.start_cycle(&catalog);
                        Ok(false)
                    }
                };
                match read {
                    Ok(more) => {
                        failing_since = None;
                        if more {
                            // A full batch: read on at the next poll.
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
            self.scan_step(&catalog);
        }
    }

    /// Re-reads the folders in use at once, then starts a pass over what
    /// the server holds (or asks for another one after the pass under way).
    fn start_cycle(&mut self, catalog: &Catalog) {
        let (read, applied) = super::rescan::recent_pass(catalog, &mut self.prints);
        self.stats.rescanned.fetch_add(read, Ordering::Relaxed);
        self.stats.applied.fetch_add(applied, Ordering::Relaxed);
        if self.cycle.is_some() {
            self.again = true;
        } else {
            self.cycle = Some(ScanCycle::of(catalog, &mut self.prints));
        }
    }

    fn scan_step(&mut self, catalog: &Catalog) {
        let Some(cycle) = &mut self.cycle else {
            return;
        };
        let (checked, applied) =
            cycle.step(catalog, &mut self.prints, RESCAN_PER_POLL, RESCAN_BUDGET);
        self.stats.rescanned.fetch_add(checked, Ordering::Relaxed);
        self.stats.applied.fetch_add(applied, Ordering::Relaxed);
        if cycle.is_done() {
            self.cycle = None;
            if std::mem::take(&mut self.again) {
                self.cycle = Some(ScanCycle::of(catalog, &mut self.prints));
            }
        }
    }

    /// An app migration that rebuilds `file_nodes` drops our triggers with
    /// the old table: put them back, and re-read what the server holds for
    /// the edits made meanwhile. If they cannot go back, re-read from now on.
    fn keep_triggers(&mut self, catalog: &Catalog) {
        let Ok(schema) = self
            .conn
            .query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0))
        else {
            return;
        };
        if self.schema == Some(schema) {
            return;
        }
        self.schema = Some(schema);
        let Ok((triggers, table)) = installed(&self.conn) else {
            return;
        };
        if triggers && table {
            return;
        }
        if install(&self.conn) {
            tracing::warn!(
                "the change feed's triggers were gone (an app migration of file_nodes?): put back; re-reading the folders the server holds for the edits made meanwhile"
            );
            self.stats.reinstalls.fetch_add(1, Ordering::Relaxed);
            if !table {
                // A new table numbers its rows from the start again.
                self.last = 0;
            }
        } else {
            self.mode = FeedMode::Scan;
            self.stats.scanning.store(true, Ordering::Relaxed);
            catalog.track_recent.store(true, Ordering::Relaxed);
        }
        self.schema = None;
        self.start_cycle(catalog);
    }

    /// Applies the feed rows after the last one applied; true when a full
    /// batch was read (more may wait).
    fn read_rows(&mut self, catalog: &Catalog) -> rusqlite::Result<bool> {
        if self.mode != FeedMode::Triggers {
            return Ok(false);
        }
        let rows = read_after(&self.conn, self.last)?;
        let Some(upto) = rows.last().map(|r| r.0) else {
            return Ok(false);
        };
        for (_, change) in &rows {
            catalog.apply_external(change);
        }
        self.stats
            .applied
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.last = upto;
        // Applied: the rows can go.
        if let Err(e) = self.conn.execute(
            "DELETE FROM markbase_nfs_changes WHERE seq <= ?1",
            [self.last],
        ) {
            tracing::debug!(error = %e, "feed rows not pruned yet");
        }
        Ok(rows.len() == BATCH)
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
