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
use rusqlite::{params, Connection};

use super::node::{Node, NodeId, NodeKind, TimeUnit};
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
        let result = self.commit(&batch, &q.jobs).map_err(|e| {
            tracing::error!(error = %e, "catalog batch failed to commit");
            format!("catalog commit failed: {e}")
        });
        for (node, version) in &batch {
            self.pins.unpin_node(node, *version);
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

    fn commit(&mut self, dirty: &[(Arc<Node>, u64)], jobs: &[Job]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        let mut statements = 0u64;
        let mut nodes = 0u64;
        // Namespace jobs first, in submission order, then data updates (which
        // only update rows that exist: a removed node is not resurrected).
        for job in jobs {
            for change in &job.changes {
                match change {
                    Change::Upsert(n) => {
                        statements += write_node(&tx, &self.shape, n, true)?;
                        nodes += 1;
                    }
                    Change::Delete(id) => {
                        let v = id.to_sql();
                        tx.prepare_cached("DELETE FROM file_nodes WHERE node_id = ?1")?
                            .execute([&v])?;
                        tx.prepare_cached("DELETE FROM markbase_nfs_attrs WHERE node_id = ?1")?
                            .execute([&v])?;
                        statements += 2;
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
            statements += write_node(&tx, &self.shape, n, false)?;
            nodes += 1;
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

/// Writes a node's current state; returns the statements run.
fn write_node(
    tx: &Connection,
    shape: &CatalogShape,
    node: &Node,
    insert: bool,
) -> rusqlite::Result<u64> {
    let m = node.meta().clone();
    if m.deleted {
        return Ok(0);
    }
    let unit: TimeUnit = shape.time_unit;
    let id = node.id.to_sql();
    let parent = m.parent.as_ref().map(NodeId::to_sql);
    let updated = unit.ns_to_unit(m.modified_ns);
    let size = match node.kind {
        NodeKind::File => m.size as i64,
        NodeKind::Folder => 0,
    };
    let mut statements = 1;
    let changed = tx
        .prepare_cached(
            "UPDATE file_nodes SET parent_id = ?2, label = ?3, file_size = ?4, updated_at = ?5
             WHERE node_id = ?1",
        )?
        .execute(params![id, parent, m.label, size, updated])?;
    if changed == 0 {
        if !insert {
            return Ok(statements);
        }
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
    Ok(statements + 1)
}
