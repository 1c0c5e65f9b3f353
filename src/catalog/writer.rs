//! The background metadata writer: two threads between the server and SQLite.
//!
//! WRITEs only mark their node dirty (a channel send); dirty nodes are
//! coalesced and persisted every `interval`. Namespace changes (create,
//! rename, remove, setattr) arrive as jobs whose submitter waits.
//!
//! With a journal, namespace jobs queue in a `Group`; the first submitter
//! to wait leads: it takes every job queued (group commit: many creates
//! share one flush), writes them as one record to the intent journal
//! (`journal.rs`, one `fdatasync`), answers them and hands the batch to the
//! back thread. Jobs queued meanwhile go to the next leader, so one change
//! at a time costs no hand-off to another thread. The front thread batches
//! the dirty nodes of WRITEs, flushes and stops, and leads for jobs nobody
//! waits for; without a journal it batches jobs as well. The back thread applies batches
//! to SQLite, as many as have arrived in one transaction, with
//! `synchronous=NORMAL`: the journal is what a reply promised. It makes
//! SQLite durable (one synced commit) when a region of the journal fills
//! (the writer goes on in the other) and whenever it has been idle a
//! moment; a batch is one transaction, so a crash never leaves half of it
//! applied, and start-up replays what the journal holds beyond what SQLite
//! applied.
//!
//! Without a journal (`journal = false`, or it cannot be created) the back
//! thread commits with `synchronous=FULL` and answers the jobs itself.
//!
//! The SQL itself (journal replay, node rows) is in `writer/sql.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};
use rusqlite::types::Value;
use rusqlite::{params, Connection};

use super::journal::{self, Entry, IdImage, Journal, NodeImage};
use super::node::{Columns, Node, NodeId, NodeKind, TimeUnit};
use super::pins::Pins;
use super::schema::CatalogShape;
pub(crate) use answer::Then;
use answer::{answer, Answer, Answerer, Outcome, STOPPED};
use coalesce::coalesce;
use group::Group;
#[cfg(test)]
pub(crate) use group::JournalHeld;
pub(crate) use sql::replay_journal;
use sql::{applied_seq, apply_entry, set_applied};

mod answer;
mod coalesce;
mod group;
mod sql;

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
    /// Folder listings pinned in memory until this job is in SQLite.
    pub listings: Vec<NodeId>,
    pub done: Answerer,
}

enum Msg {
    Dirty(Arc<Node>),
    Job(Job),
    /// Jobs are queued in the group and nobody waits to lead them.
    Lead,
    Flush(Answerer),
    Stop,
}

/// Counters for tests and the operator.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub statements: AtomicU64,
    pub transactions: AtomicU64,
    pub nodes_written: AtomicU64,
    /// Journal records written (each one `fdatasync`).
    pub journal_records: AtomicU64,
    /// Namespace changes in those records (÷ records: the group size).
    pub journal_changes: AtomicU64,
    /// Microseconds spent writing and syncing them (÷ records: a group
    /// commit's latency).
    pub journal_micros: AtomicU64,
    /// Synced SQLite commits that let the journal start over.
    pub durable_commits: AtomicU64,
}

pub(crate) struct Writer {
    tx: Sender<Msg>,
    /// Set when namespace changes go through the journal.
    group: Option<Arc<Group>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    pub stats: Arc<WriterStats>,
    before_durable: Arc<OnceLock<DurableHook>>,
}

/// Run before SQLite is made durable and the journal may start over:
/// whatever the journal's replay would otherwise have to redo must be on
/// disk by then (the folder entries of new content files).
pub type DurableHook = Box<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// A submitted job's answer to come. Waiting on it leads the group commit
/// if nobody else is writing the journal.
pub(crate) struct Commit {
    answer: Answer,
    group: Option<Arc<Group>>,
}

impl Commit {
    /// A change that needed no commit.
    pub fn done() -> Commit {
        Commit {
            answer: Answer::ready(Ok(())),
            group: None,
        }
    }

    /// Blocks until the job is durable (journal) or committed (SQLite).
    pub fn wait(mut self) -> Result<(), String> {
        if let Some(g) = self.group.take() {
            g.lead(false);
        }
        self.answer.wait()
    }

    /// Runs `then` once the job is durable (or committed), or with why
    /// not, without waiting for it here: on this thread if it leads the
    /// journal write (nobody else is writing it), else on the thread that
    /// writes the record holding the job.
    pub fn then(mut self, then: Then) {
        self.answer.then(then);
        if let Some(g) = self.group.take() {
            g.lead(false);
        }
    }
}

impl Drop for Commit {
    /// Nobody will wait: the front thread leads the job in.
    fn drop(&mut self) {
        if let Some(g) = self.group.take() {
            let _ = g.front.send(Msg::Lead);
        }
    }
}

/// The newest journal record SQLite holds durably, and a wait for it.
#[derive(Default)]
struct DurableMark {
    seq: Mutex<u64>,
    moved: Condvar,
}

impl DurableMark {
    /// Waits (a minute at most) until SQLite holds journal record `seq`
    /// durably; false if it does not by then.
    fn reaches(&self, seq: u64) -> bool {
        let mut durable = self.seq.lock();
        let until = Instant::now() + Duration::from_secs(60);
        while *durable < seq {
            if self.moved.wait_until(&mut durable, until).timed_out() {
                break;
            }
        }
        *durable >= seq
    }
}

/// Asks the back thread to make SQLite durable (it applies what it has
/// first), without waiting.
fn ask_durable(to_back: &Sender<BackMsg>) {
    let _ = to_back.send(BackMsg::Batch(Batch {
        durable: true,
        ..Batch::default()
    }));
}

impl Writer {
    /// Starts the writer; `journal`: make namespace changes durable through
    /// the intent journal (else through synced SQLite commits).
    pub fn start(
        db: &Path,
        shape: CatalogShape,
        pins: Arc<Pins>,
        interval: Duration,
        max_batch: usize,
        journal: bool,
        gather: Duration,
    ) -> anyhow::Result<Writer> {
        let conn = Connection::open(db)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // Every statement the writer runs stays prepared (the UPDATE has a
        // form per set of columns): parsing SQL again was a fifth of the
        // thread's time.
        conn.set_prepared_statement_cache_capacity(64);
        let applied = applied_seq(&conn)?;
        let journal = if journal {
            match Journal::open(&journal::path_for(db), applied) {
                Ok(j) => Some(j),
                Err(e) => {
                    tracing::warn!(db = %db.display(), error = %e, "cannot open the catalog's intent journal: namespace changes wait for synced SQLite commits");
                    None
                }
            }
        } else {
            None
        };
        // With a journal, the journal is what replies promise; without one,
        // a commit must be on stable storage when it returns.
        let sync = if journal.is_some() { "NORMAL" } else { "FULL" };
        conn.pragma_update(None, "synchronous", sync)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let (to_back, back_rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(WriterStats::default());
        let mark = Arc::new(DurableMark {
            seq: Mutex::new(applied),
            moved: Condvar::new(),
        });
        let before_durable: Arc<OnceLock<DurableHook>> = Default::default();
        let back = BackLoop {
            before_durable: before_durable.clone(),
            conn,
            shape,
            pins,
            stats: stats.clone(),
            mark: mark.clone(),
            journaled: journal.is_some(),
            applied,
            durable: applied,
            gather,
        };
        let back = std::thread::Builder::new()
            .name("catalog-sqlite".into())
            .spawn(move || back.run(back_rx))?;
        let journaled = journal.is_some();
        let sink = Arc::new(Mutex::new(Sink {
            journal,
            to_back,
            mark,
            stats: stats.clone(),
            stopped: false,
        }));
        let group = journaled.then(|| {
            Arc::new(Group {
                queued: Mutex::new(Vec::new()),
                sink: sink.clone(),
                front: tx.clone(),
                max_batch: max_batch.max(1),
            })
        });
        let front = FrontLoop {
            sink,
            group: group.clone(),
            interval,
            max_batch: max_batch.max(1),
        };
        let front = std::thread::Builder::new()
            .name("catalog-writer".into())
            .spawn(move || front.run(rx))?;
        Ok(Writer {
            tx,
            group,
            threads: Mutex::new(vec![front, back]),
            stats,
            before_durable,
        })
    }

    /// Sets what runs before each durable point (once; later calls are
    /// ignored).
    pub fn before_durable(&self, hook: DurableHook) {
        let _ = self.before_durable.set(hook);
    }

    pub fn dirty(&self, node: Arc<Node>) {
        let _ = self.tx.send(Msg::Dirty(node));
    }

    /// Queues a namespace change; callers submit in the order of their
    /// in-memory changes, and the journal keeps that order.
    pub fn submit(&self, changes: Vec<Change>, listings: Vec<NodeId>) -> Commit {
        let (done, answer) = answer();
        let job = Job {
            changes,
            listings,
            done,
        };
        if let Some(g) = &self.group {
            g.queued.lock().push(job);
            return Commit {
                answer,
                group: Some(g.clone()),
            };
        }
        if let Err(e) = self.tx.send(Msg::Job(job)) {
            let Msg::Job(job) = e.0 else { unreachable!() };
            job.done.tell(Err(STOPPED.into()));
        }
        Commit {
            answer,
            group: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn hold_journal(&self) -> JournalHeld<'_> {
        self.group
            .as_deref()
            .expect("a catalog with a journal")
            .hold()
    }

    /// Persists everything queued so far into SQLite.
    pub fn flush(&self) -> Result<(), String> {
        let (done, flushed) = answer();
        self.tx
            .send(Msg::Flush(done))
            .map_err(|_| STOPPED.to_string())?;
        flushed.wait()
    }

    /// Flushes, makes SQLite durable and stops the threads.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

/// What the front thread has received and not yet taken.
#[derive(Default)]
struct Queue {
    dirty: HashMap<NodeId, Arc<Node>>,
    dirty_since: Option<Instant>,
    jobs: Vec<Job>,
    flushes: Vec<Answerer>,
    /// Jobs wait in the group for a leader.
    lead: bool,
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
            Msg::Lead => self.lead = true,
            Msg::Flush(f) => self.flushes.push(f),
            Msg::Stop => self.stop = true,
        }
    }
}

/// A batch on its way to SQLite.
#[derive(Default)]
struct Batch {
    /// The journal record holding its namespace changes.
    seq: Option<u64>,
    /// Namespace changes first, in submission order, then data updates.
    entries: Vec<Entry>,
    /// Nodes whose columns the batch took.
    taken: Vec<(Arc<Node>, Columns)>,
    /// Nodes of namespace changes, unpinned once in SQLite.
    job_nodes: Vec<Arc<Node>>,
    /// Dirty nodes and the version taken, unpinned if still that version.
    dirty_nodes: Vec<(Arc<Node>, u64)>,
    /// Nodes removed, pinned as removed until SQLite has it.
    deleted: Vec<NodeId>,
    listings: Vec<NodeId>,
    /// Answered once the batch is in SQLite (flushes; jobs without a journal).
    waiters: Vec<Answerer>,
    /// Make SQLite durable after applying (the journal wants to start over).
    durable: bool,
}

enum BackMsg {
    Batch(Batch),
    Stop,
}

/// Takes batches' node images, journals their jobs and hands the batches to
/// the back thread; one holder at a time (`Group::sink`).
struct Sink {
    journal: Option<Journal>,
    to_back: Sender<BackMsg>,
    mark: Arc<DurableMark>,
    stats: Arc<WriterStats>,
    /// The writer has stopped: jobs are refused.
    stopped: bool,
}

/// Gives answers (see `Group::lead`: after the sink is let go).
fn tell_all(answers: Vec<(Answerer, Outcome)>) {
    for (to, outcome) in answers {
        to.tell(outcome);
    }
}

impl Sink {
    /// One batch: the jobs' changes (journaled, then answered; without a
    /// journal answered once in SQLite), then the dirty nodes' columns.
    /// Returns the answers to give: the caller gives them once it has let
    /// the sink go.
    #[must_use = "the jobs' submitters wait for these answers"]
    fn send(
        &mut self,
        jobs: Vec<Job>,
        dirty: Vec<Arc<Node>>,
        mut waiters: Vec<Answerer>,
        durable: bool,
    ) -> Vec<(Answerer, Outcome)> {
        if self.stopped {
            let stopped = || Err(STOPPED.to_string());
            let jobs = jobs.into_iter().map(|j| (j.done, stopped()));
            return jobs
                .chain(waiters.into_iter().map(|w| (w, stopped())))
                .collect();
        }
        let mut b = Batch::default();
        for job in &jobs {
            for change in &job.changes {
                b.entries.push(match change {
                    Change::Upsert(n) => {
                        let (img, cols) = NodeImage::take(n, true);
                        b.taken.push((n.clone(), cols));
                        b.job_nodes.push(n.clone());
                        Entry::Upsert(Box::new(img))
                    }
                    Change::Delete(id) => match IdImage::of(id) {
                        Some(i) => {
                            b.deleted.push(id.clone());
                            Entry::Delete(i)
                        }
                        None => continue,
                    },
                    Change::ClientUp(id) => Entry::ClientUp(id.clone()),
                    Change::ClientDown(id) => Entry::ClientDown(id.clone()),
                });
            }
        }
        let namespace = b.entries.len();
        // Jobs without entries (a sync point, see `Catalog::sync_point`)
        // need no record: whatever was queued before them has been
        // written by now, under this sink.
        let result = if namespace == 0 {
            Ok(())
        } else {
            self.journal_entries(&mut b, namespace)
        };
        for n in dirty {
            // Before reading its state: a change after this queues it again.
            n.taken_by_writer();
            let v = n.version();
            let (img, cols) = NodeImage::take(&n, false);
            b.taken.push((n.clone(), cols));
            b.entries.push(Entry::Upsert(Box::new(img)));
            b.dirty_nodes.push((n, v));
        }
        let mut answers = Vec::new();
        for job in jobs {
            b.listings.extend(job.listings);
            match (&result, self.journal.is_some()) {
                (Ok(()), false) => b.waiters.push(job.done),
                (r, _) => answers.push((job.done, r.clone())),
            }
        }
        b.waiters.append(&mut waiters);
        b.durable = durable;
        if let Err(e) = self.to_back.send(BackMsg::Batch(b)) {
            let BackMsg::Batch(b) = e.0 else {
                unreachable!()
            };
            answers.extend(b.waiters.into_iter().map(|w| (w, Err(STOPPED.to_string()))));
        }
        answers
    }

    /// Writes the batch's first `count` entries (its namespace changes) to
    /// the journal, starting it over first if SQLite holds everything in it
    /// durably (or waiting until it does when it is full).
    fn journal_entries(&mut self, b: &mut Batch, count: usize) -> Result<(), String> {
        let Some(j) = self.journal.as_mut() else {
            return Ok(());
        };
        let failed = |e: std::io::Error, j: &Journal| {
            tracing::error!(journal = %j.path().display(), error = %e, "cannot write the catalog's intent journal");
            format!("catalog journal write failed: {e}")
        };
        let payload = journal::encode(&b.entries[..count]).map_err(|e| failed(e, j))?;
        let durable = *self.mark.seq.lock();
        if durable >= j.last_seq && j.used() > 0 {
            j.rewind();
        } else if !j.fits(payload.len()) {
            // This region is full. SQLite makes its records durable beside
            // the journal, and the record goes to the other region, whose
            // records SQLite was asked for when that one filled: unless
            // changes came faster than a synced commit, it holds them.
            ask_durable(&self.to_back);
            // A record larger than a region goes at the file's start, once
            // everything in it is durable.
            let whole_file = !Journal::fits_a_region(payload.len());
            let ready = if whole_file {
                j.last_seq
            } else {
                j.other_region_newest()
            };
            if !self.mark.reaches(ready) {
                tracing::error!(journal = %j.path().display(), "the catalog's intent journal is full and SQLite has not made its records durable within a minute");
                return Err("catalog journal full: SQLite has not caught up".into());
            }
            if whole_file {
                j.rewind();
            } else {
                j.switch_region();
            }
        }
        let started = std::time::Instant::now();
        match j.append(&payload) {
            Ok(seq) => {
                b.seq = Some(seq);
                let micros = started.elapsed().as_micros() as u64;
                self.stats.journal_records.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .journal_changes
                    .fetch_add(count as u64, Ordering::Relaxed);
                self.stats
                    .journal_micros
                    .fetch_add(micros, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(failed(e, j)),
        }
    }
}

/// The front thread: dirty nodes every `interval`, flushes, the stop, jobs
/// nobody waits for, and (without a journal) every job.
struct FrontLoop {
    sink: Arc<Mutex<Sink>>,
    group: Option<Arc<Group>>,
    interval: Duration,
    max_batch: usize,
}

impl FrontLoop {
    fn run(self, rx: Receiver<Msg>) {
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
            if let Some(g) = &self.group {
                if q.lead || q.stop || !q.flushes.is_empty() {
                    // A flush covers the jobs queued before it.
                    g.lead(q.stop || !q.flushes.is_empty());
                }
            }
            q.lead = false;
            let due = q.stop
                || !q.jobs.is_empty()
                || !q.flushes.is_empty()
                || q.dirty.len() >= self.max_batch
                || q.dirty_since.is_some_and(|t| t.elapsed() >= self.interval);
            if due {
                self.take_batch(&mut q);
                if let Some(g) = &self.group {
                    // A submitter may have found the sink held by this
                    // thread and left its job to it.
                    g.lead(false);
                }
            }
        }
        let mut sink = self.sink.lock();
        sink.stopped = true;
        let _ = sink.to_back.send(BackMsg::Stop);
    }

    fn take_batch(&self, q: &mut Queue) {
        let dirty: Vec<Arc<Node>> = q.dirty.drain().map(|(_, n)| n).collect();
        q.dirty_since = None;
        let jobs = std::mem::take(&mut q.jobs);
        let flushes = std::mem::take(&mut q.flushes);
        let answers = self.sink.lock().send(jobs, dirty, flushes, q.stop);
        tell_all(answers);
    }
}

struct BackLoop {
    before_durable: Arc<OnceLock<DurableHook>>,
    conn: Connection,
    shape: CatalogShape,
    pins: Arc<Pins>,
    stats: Arc<WriterStats>,
    mark: Arc<DurableMark>,
    journaled: bool,
    /// The newest journal record in SQLite, and the newest durably.
    applied: u64,
    durable: u64,
    /// How long a journaled batch waits for others to share its SQLite
    /// transaction (nobody waits for it: the reply went out).
    gather: Duration,
}

/// How long the back thread waits idle before making SQLite durable.
const IDLE_DURABLE: Duration = Duration::from_millis(250);

impl BackLoop {
    fn run(mut self, rx: Receiver<BackMsg>) {
        let mut pending: Vec<Batch> = Vec::new();
        let mut stop = false;
        while !stop || !pending.is_empty() {
            if pending.is_empty() {
                match rx.recv_timeout(IDLE_DURABLE) {
                    Ok(BackMsg::Batch(b)) => pending.push(b),
                    Ok(BackMsg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                        stop = true;
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        if self.journaled && self.durable < self.applied {
                            self.make_durable();
                        }
                        continue;
                    }
                }
            }
            // Gather while nobody waits: one transaction for many batches.
            // The thread sleeps through the gathering rather than wait on
            // the channel, which would wake it for every batch sent (one
            // context switch per group commit, on two busy cores). What
            // arrives meanwhile waits at most `gather`: a flush (start-up
            // and tests) or a journal region asking to be made durable.
            let urgent = pending.iter().any(|b| !b.waiters.is_empty() || b.durable);
            if self.journaled && !urgent && !stop && !self.gather.is_zero() {
                std::thread::sleep(self.gather);
            }
            while !stop {
                match rx.try_recv() {
                    Ok(BackMsg::Batch(b)) => pending.push(b),
                    Ok(BackMsg::Stop) => stop = true,
                    Err(_) => break,
                }
            }
            match self.apply(&pending) {
                Ok(()) => {
                    let durable = pending.iter().any(|b| b.durable) || stop;
                    for b in pending.drain(..) {
                        self.finish(b, Ok(()));
                    }
                    if durable && self.journaled {
                        self.make_durable();
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, batches = pending.len(), "catalog batch failed to commit to SQLite; retrying");
                    if !self.journaled {
                        // Nothing promised yet: the waiters learn of it,
                        // and the data updates are retried.
                        let msg = format!("catalog commit failed: {e}");
                        for b in &mut pending {
                            for w in b.waiters.drain(..) {
                                w.tell(Err(msg.clone()));
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// The batch is in SQLite: its columns are written, its nodes and
    /// listings may leave memory, its waiters are answered.
    fn finish(&self, b: Batch, result: Result<(), String>) {
        for (node, cols) in &b.taken {
            node.writer_done(*cols, result.is_ok());
        }
        for (node, version) in &b.dirty_nodes {
            self.pins.unpin_node(node, *version);
        }
        for n in &b.job_nodes {
            self.pins.unpin_node(n, n.version());
        }
        for id in &b.deleted {
            self.pins.unpin_deleted(id);
        }
        self.pins.release_listings(&b.listings);
        for w in b.waiters {
            w.tell(result.clone());
        }
    }

    /// One synced commit: everything applied so far survives a crash, so
    /// the journal may start over.
    fn make_durable(&mut self) {
        if let Some(hook) = self.before_durable.get() {
            if let Err(e) = hook() {
                tracing::error!(error = %e, "cannot make new content files' folder entries durable; the journal keeps its records");
                return;
            }
        }
        let result = (|| -> rusqlite::Result<()> {
            self.conn.pragma_update(None, "synchronous", "FULL")?;
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            set_applied(&tx, self.applied)?;
            let r = tx.commit();
            self.conn.pragma_update(None, "synchronous", "NORMAL")?;
            r
        })();
        match result {
            Ok(()) => {
                self.durable = self.applied;
                self.stats.durable_commits.fetch_add(1, Ordering::Relaxed);
                *self.mark.seq.lock() = self.durable;
                self.mark.moved.notify_all();
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot make the catalog durable; the journal keeps its records")
            }
        }
    }

    fn apply(&mut self, batches: &[Batch]) -> rusqlite::Result<()> {
        if batches.iter().all(|b| b.entries.is_empty()) {
            return Ok(());
        }
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
        for e in coalesce(batches.iter().flat_map(|b| &b.entries)) {
            statements += apply_entry(&tx, &self.shape, &e)?;
            nodes += matches!(*e, Entry::Upsert(_)) as u64;
        }
        let newest = batches.iter().filter_map(|b| b.seq).max();
        if let Some(seq) = newest {
            set_applied(&tx, seq)?;
            statements += 1;
        }
        if let Some(mark) = feed_mark {
            tx.prepare_cached("DELETE FROM markbase_nfs_changes WHERE seq > ?1")?
                .execute([mark])?;
            statements += 2;
        }
        tx.commit()?;
        if let Some(seq) = newest {
            self.applied = seq;
        }
        self.stats
            .statements
            .fetch_add(statements + 1, Ordering::Relaxed);
        self.stats.transactions.fetch_add(1, Ordering::Relaxed);
        self.stats.nodes_written.fetch_add(nodes, Ordering::Relaxed);
        Ok(())
    }
}
