//! The background metadata writer: one thread owning the write connection.
//!
//! WRITEs only mark their node dirty (a channel send); the writer coalesces
//! dirty nodes and persists them every `interval` in one transaction.
//! Namespace changes (create, rename, remove, setattr) arrive as jobs whose
//! submitter waits: the writer commits whatever is queued right away in one
//! transaction (group commit: many creates share one fsync) and then answers
//! every job in it. A batch is one transaction, so a crash never leaves half
//! of it applied.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use rusqlite::types::Value;
use rusqlite::{params, Connection};

use super::node::{Columns, Node, NodeId, NodeKind, TimeUnit};
use super::pins::Pins;
use super::schema::CatalogShape;

/// One change to persist.
pub(crate) enum Change {
    /// Write the node's current state, inserting the row if it is new.
    Upsert(Arc<Node>),
    Delete(NodeId),
    /// An NFS client confirmed (kept for reclaim after a restart).
    ClientUp(Vec<u8>),
    /// An NFS client gone (lease expired, or never came back).
    ClientDown(Vec<u8>),
}

/// A namespace change and the submitter waiting for its commit.
pub(crate) struct Job {
    pub changes: Vec<Change>,
    /// Folder listings pinned in memory until this job is committed.
    pub listings: Vec<NodeId>,
    pub done: Sender<Result<(), String>>,
}

enum Msg {
    Dirty(Arc<Node>),
    Job(Job),
    Flush(Sender<Result<(), String>>),
    Stop,
}

/// Counters for tests and the operator.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub statements: AtomicU64,
    pub transactions: AtomicU64,
    pub nodes_written: AtomicU64,
}

pub(crate) struct Writer {
    tx: Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub stats: Arc<WriterStats>,
}

/// How long a committed job's waiter may be kept waiting.
pub(crate) type Commit = Receiver<Result<(), String>>;

impl Writer {
    pub fn start(
        db: &Path,
        shape: CatalogShape,
        pins: Arc<Pins>,
        interval: Duration,
        max_batch: usize,
    ) -> anyhow::Result<Writer> {
        let conn = Connection::open(db)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // A commit is on stable storage when it returns: replies promise it.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(WriterStats::default());
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("catalog-writer".into())
            .spawn(move || {
                WriterLoop {
                    conn,
                    shape,
                    pins,
                    stats: st,
                    interval,
                    max_batch: max_batch.max(1),
                }
                .run(rx)
            })?;
        Ok(Writer {
            tx,
            thread: Mutex::new(Some(thread)),
            stats,
        })
    }

    pub fn dirty(&self, node: Arc<Node>) {
        let _ = self.tx.send(Msg::Dirty(node));
    }

    pub fn submit(&self, changes: Vec<Change>, listings: Vec<NodeId>) -> Commit {
        let (done, rx) = crossbeam_channel::bounded(1);
        let job = Job {
            changes,
            listings,
            done,
        };
        if let Err(e) = self.tx.send(Msg::Job(job)) {
            let Msg::Job(job) = e.0 else { unreachable!() };
            let _ = job.done.send(Err("catalog writer has stopped".into()));
        }
        rx
    }

    /// Persists everything queued so far.
    pub fn flush(&self) -> Result<(), String> {
        let (done, rx) = crossbeam_channel::bounded(1);
        self.tx
            .send(Msg::Flush(done))
            .map_err(|_| "catalog writer has stopped".to_string())?;
        rx.recv()
            .map_err(|_| "catalog writer has stopped".to_string())?
    }

    /// Flushes and stops the thread.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// What the writer has received and not yet committed.
#[derive(Default)]
struct Queue {
    dirty: HashMap<NodeId, Arc<Node>>,
    dirty_since: Option<Instant>,
    jobs: Vec<Job>,
    flushes: Vec<Sender<Result<(), String>>>,
    stop: bool,
}

impl Queue {
    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Dirty(n) => {
                self.dirty_since.get_or_insert_with(Instant::now);
                self.dirty.insert(n.id.clone(), n);
            }
            Msg::Job(j) => self.jobs.push(j),
            Msg::Flush(f) => self.flushes.push(f),
            Msg::Stop => self.stop = true,
        }
    }
}

struct WriterLoop {
    conn: Connection,
    shape: CatalogShape,
    pins: Arc<Pins>,
    stats: Arc<WriterStats>,
    interval: Duration,
    max_batch: usize,
}

impl WriterLoop {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut q = Queue::default();
        while !q.stop {
            let wait = match q.dirty_since {
                Some(t) => self.interval.saturating_sub(t.elapsed()),
                None => Duration::from_secs(3600),
            };
            match rx.recv_timeout(wait) {
                Ok(msg) => q.take(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => q.stop = true,
            }
            while q.jobs.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(msg) => q.take(msg),
                    Err(_) => break,
                }
            }
            let due = q.stop
                || !q.jobs.is_empty()
                || !q.flushes.is_empty()
                || q.dirty.len() >= self.max_batch
                || q.dirty_since.is_some_and(|t| t.elapsed() >= self.interval);
            if due {
                self.commit_queue(&mut q);
            }
        }
    }

    fn commit_queue(&mut self, q: &mut Queue) {
        let batch: Vec<(Arc<Node>, u64)> = q
            .dirty
            .drain()
            .map(|(_, n)| {
                // Before reading its state: a change after this queues it again.
                n.taken_by_writer();
                let v = n.version();
                (n, v)
            })
            .collect();
        q.dirty_since = None;
        let mut taken = Vec::new();
        let result = self.commit(&batch, &q.jobs, &mut taken).map_err(|e| {
            tracing::error!(error = %e, nodes = batch.len(), jobs = q.jobs.len(), "catalog batch failed to commit; its data changes are retried");
            format!("catalog commit failed: {e}")
        });
        for (node, cols) in &taken {
            node.writer_done(*cols, result.is_ok());
        }
        if result.is_err() {
            // Nothing of the batch is in the database: the columns are
            // unsaved again, and the data changes (sizes, times: nothing
            // answered waits for them) go into the next batch, still pinned.
            for (node, _) in batch {
                q.dirty.insert(node.id.clone(), node);
            }
            q.dirty_since.get_or_insert_with(Instant::now);
        } else {
            for (node, version) in &batch {
                self.pins.unpin_node(node, *version);
            }
        }
        for job in q.jobs.drain(..) {
            for change in &job.changes {
                if let Change::Upsert(n) = change {
                    self.pins.unpin_node(n, n.version());
                }
            }
            self.pins.release_listings(&job.listings);
            let _ = job.done.send(result.clone());
        }
        for f in q.flushes.drain(..) {
            let _ = f.send(result.clone());
        }
    }

    fn commit(
        &mut self,
        dirty: &[(Arc<Node>, u64)],
        jobs: &[Job],
        taken: &mut Vec<(Arc<Node>, Columns)>,
    ) -> rusqlite::Result<()> {
        // IMMEDIATE: the write lock from the start, so a commit of the
        // MarkBase app in between cannot make the batch fail (WAL snapshot).
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut statements = 0u64;
        // Where the change feed is installed, the rows our transaction
        // adds to it are removed before it commits, so the server's changes
        // never come back through it (None: no feed table).
        let feed_mark = super::feed::newest(&tx).ok();
        let mut nodes = 0u64;
        // Namespace jobs first, in submission order, then data updates (which
        // only update rows that exist: a removed node is not resurrected).
        for job in jobs {
            for change in &job.changes {
                match change {
                    Change::Upsert(n) => {
                        statements += write_node(&tx, &self.shape, n, true, taken)?;
                        nodes += 1;
                    }
                    Change::Delete(id) => {
                        let v = id.to_sql();
                        tx.prepare_cached("DELETE FROM file_nodes WHERE node_id = ?1")?
                            .execute([&v])?;
                        tx.prepare_cached("DELETE FROM markbase_nfs_attrs WHERE node_id = ?1")?
                            .execute([&v])?;
                        statements += 2;
                        if id.is_special() {
                            tx.prepare_cached(
                                "DELETE FROM markbase_nfs_specials WHERE node_id = ?1",
                            )?
                            .execute([&v])?;
                            statements += 1;
                        }
                    }
                    Change::ClientUp(id) => {
                        tx.prepare_cached(
                            "INSERT INTO markbase_nfs_clients (client_id, confirmed_ns) VALUES (?1, ?2)
                             ON CONFLICT(client_id) DO UPDATE SET confirmed_ns = excluded.confirmed_ns",
                        )?
                        .execute(params![id, super::node::now_ns()])?;
                        statements += 1;
                    }
                    Change::ClientDown(id) => {
                        tx.prepare_cached("DELETE FROM markbase_nfs_clients WHERE client_id = ?1")?
                            .execute([id])?;
                        statements += 1;
                    }
                }
            }
        }
        for (n, _) in dirty {
            statements += write_node(&tx, &self.shape, n, false, taken)?;
            nodes += 1;
        }
        if let Some(mark) = feed_mark {
            tx.prepare_cached("DELETE FROM markbase_nfs_changes WHERE seq > ?1")?
                .execute([mark])?;
            statements += 2;
        }
        tx.commit()?;
        self.stats
            .statements
            .fetch_add(statements + 1, Ordering::Relaxed);
        self.stats.transactions.fetch_add(1, Ordering::Relaxed);
        self.stats.nodes_written.fetch_add(nodes, Ordering::Relaxed);
        Ok(())
    }
}

/// Writes what the server changed of a node: the `file_nodes` columns it
/// marked unsaved and no others (the MarkBase app edits the same rows), the
/// whole row only for a node new to the table (`insert`), and our side
/// table. Returns the statements run; the columns taken go to `taken`, to
/// be marked again if the transaction does not commit.
fn write_node(
    tx: &Connection,
    shape: &CatalogShape,
    node: &Arc<Node>,
    insert: bool,
    taken: &mut Vec<(Arc<Node>, Columns)>,
) -> rusqlite::Result<u64> {
    let (m, cols) = node.take_for_writer();
    taken.push((node.clone(), cols));
    if m.deleted {
        return Ok(0);
    }
    if node.kind.is_special() {
        return write_special(tx, node, &m, insert);
    }
    let unit: TimeUnit = shape.time_unit;
    let id = node.id.to_sql();
    let parent = m.parent.as_ref().map(NodeId::to_sql).unwrap_or(Value::Null);
    let updated = unit.ns_to_unit(m.modified_ns);
    let size = match node.kind {
        NodeKind::File => m.size as i64,
        _ => 0,
    };
    let mut statements = 0;
    let mut row_exists = None;
    if !cols.is_empty() {
        let mut sets = Vec::new();
        let mut values: Vec<Value> = vec![id.clone()];
        let mut set = |column: &str, v: Value| {
            values.push(v);
            sets.push(format!("{column} = ?{}", values.len()));
        };
        if cols.contains(Columns::PLACE) {
            set("parent_id", parent.clone());
            set("label", Value::Text(m.label.clone()));
        }
        if cols.contains(Columns::SIZE) {
            set("file_size", Value::Integer(size));
        }
        if cols.contains(Columns::UPDATED) {
            set("updated_at", Value::Integer(updated));
        }
        let sql = format!(
            "UPDATE file_nodes SET {} WHERE node_id = ?1",
            sets.join(", ")
        );
        let changed = tx
            .prepare_cached(&sql)?
            .execute(rusqlite::params_from_iter(values))?;
        statements += 1;
        row_exists = Some(changed > 0);
    }
    // Whether the node has a row (known from the UPDATE, else asked).
    let exists = match row_exists {
        Some(e) => e,
        None => {
            statements += 1;
            tx.prepare_cached("SELECT 1 FROM file_nodes WHERE node_id = ?1")?
                .exists([&id])?
        }
    };
    if !insert && !exists {
        // A data update of a node the MarkBase app deleted: no row, no
        // side-table row either (an orphan would dress a later node that
        // reuses the id).
        return Ok(statements);
    }
    if insert && !exists {
        let aliases = match &m.content {
            Some(p) => serde_json::json!({ "path": p.to_string_lossy() }).to_string(),
            None => "{}".to_string(),
        };
        tx.prepare_cached(
            "INSERT INTO file_nodes (node_id, parent_id, label, node_type, aliases_json, file_size, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            id,
            parent,
            m.label,
            node.kind.as_catalog(),
            aliases,
            size,
            unit.ns_to_unit(node.created_ns),
            updated
        ])?;
        statements += 1;
    }
    write_side_row(tx, &id, &m)?;
    Ok(statements + 1)
}

/// Writes a special node (symlink, FIFO, socket, device): its row in our
/// table (`insert`: created or moved; otherwise only if it still has one)
/// and its side row.
fn write_special(
    tx: &Connection,
    node: &Arc<Node>,
    m: &super::node::NodeMeta,
    insert: bool,
) -> rusqlite::Result<u64> {
    let id = node.id.to_sql();
    if !insert {
        let exists = tx
            .prepare_cached("SELECT 1 FROM markbase_nfs_specials WHERE node_id = ?1")?
            .exists([&id])?;
        if !exists {
            return Ok(1);
        }
    }
    let parent = m.parent.as_ref().map(NodeId::to_sql).unwrap_or(Value::Null);
    let special = m.special.clone().unwrap_or_default();
    tx.prepare_cached(
        "INSERT INTO markbase_nfs_specials (node_id, parent_id, label, kind, target, rdev_major, rdev_minor, created_ns, updated_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(node_id) DO UPDATE SET parent_id = excluded.parent_id, label = excluded.label,
           updated_ns = excluded.updated_ns",
    )?
    .execute(params![
        id,
        parent,
        m.label,
        node.kind.as_catalog(),
        special.target,
        special.rdev.0 as i64,
        special.rdev.1 as i64,
        node.created_ns,
        m.modified_ns
    ])?;
    write_side_row(tx, &id, m)?;
    Ok(3)
}

/// Our side-table row of a node: what `file_nodes` has no column for.
fn write_side_row(tx: &Connection, id: &Value, m: &super::node::NodeMeta) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO markbase_nfs_attrs (node_id, change, mode, owner, owner_group, modified_ns, create_verifier, created_ns, hidden)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(node_id) DO UPDATE SET change = excluded.change, mode = excluded.mode,
           owner = excluded.owner, owner_group = excluded.owner_group,
           modified_ns = excluded.modified_ns, create_verifier = excluded.create_verifier,
           created_ns = excluded.created_ns, hidden = excluded.hidden",
    )?
    .execute(params![
        id,
        m.change as i64,
        m.mode.map(|v| v as i64),
        m.owner,
        m.owner_group,
        m.modified_ns,
        m.create_verifier.map(|v| v.to_vec()),
        m.created_ns,
        m.hidden as i64
    ])?;
    Ok(())
}
