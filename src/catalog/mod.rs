//! The MarkBase catalog: the `file_nodes` table of a user's SQLite database,
//! held memory-first.
//!
//! Nodes and folder listings are loaded from SQLite on first use and kept in
//! moka caches; a LOOKUP of `(folder, name)` is answered from the folder's
//! cached listing, which is also what READDIR pages through, so the two never
//! disagree about a name. Changes are applied in memory and persisted by the
//! background writer ([`writer`]): data changes in coalesced batches,
//! namespace changes with group commit. This layer knows SQL and nothing of
//! NFS. Changes made through NFS are in `changes.rs`, the app's changes
//! applied in memory in `external.rs`, the records of NFSv4 clients and
//! boots in `clients.rs`.

mod changes;
mod clients;
mod cursor;
mod durable_append;
mod external;
mod feed;
mod gen;
mod ids;
mod import;
mod journal;
pub mod memory_only;
mod names;
mod node;
mod pins;
mod reconcile;
mod rescan;
mod schema;
#[cfg(test)]
pub(crate) mod test_support;
mod writer;

pub use cursor::ListingCursor;
pub use feed::{FeedChange, FeedMode, FeedStats};
pub use gen::{generate, GenOptions, GenSummary};
pub use import::{import_tree, ImportSummary};
pub use memory_only::MemoryOnly;
pub use names::{NameRules, MAX_NAME};
pub use node::{
    fnv1a, Columns, Listing, ListingEntry, Node, NodeId, NodeKind, NodeMeta, Special,
    SPECIAL_ID_PREFIX,
};
pub use pins::SharedListing;
pub use reconcile::{reconcile, ReconcileReport};
pub use schema::{create_demo, open_or_create};
pub use writer::{DurableHook, WriterStats};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use moka::sync::Cache;
use parking_lot::{Mutex, RwLock};
use rusqlite::{params, types::Value, Connection, OptionalExtension};
use thiserror::Error;

use crate::config::CacheConfig;
pub use node::{now_ns, ROOT_FILEID};
use pins::Pins;
use schema::CatalogShape;
use writer::{Change, Writer};

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("node {0} not found in the catalog")]
    NotFound(NodeId),
    #[error("node {0} is not a folder")]
    NotFolder(NodeId),
    #[error("{name:?} already exists in folder {dir}")]
    Exists {
        dir: NodeId,
        name: String,
        existing: Arc<Node>,
    },
    #[error("folder {0} is not empty")]
    NotEmpty(NodeId),
    #[error("cannot move folder {0} into itself")]
    IntoItself(NodeId),
    #[error("a folder cannot replace a file or a file a folder ({0})")]
    TypeMismatch(NodeId),
    #[error("catalog query failed ({what}): {source}")]
    Sql {
        what: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("catalog commit failed: {0}")]
    Commit(String),
    /// Under [`MemoryOnly`]: `{0}` would have to be read from SQLite.
    #[error("node {0} is not in memory")]
    NotInMemory(NodeId),
}

pub type CatalogResult<T> = Result<T, CatalogError>;

fn sql_err(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> CatalogError {
    let what = what.into();
    move |source| CatalogError::Sql { what, source }
}

const NODE_COLUMNS: &str = "f.node_id, f.parent_id, f.label, f.node_type, f.aliases_json, f.file_size,
    f.created_at, f.updated_at, a.change, a.mode, a.owner, a.owner_group, a.modified_ns, a.create_verifier,
    a.created_ns, a.hidden";
const NODE_FROM: &str = "FROM file_nodes f LEFT JOIN markbase_nfs_attrs a ON a.node_id = f.node_id";
/// The same for our special nodes (see `Node::from_special_row`).
const SPECIAL_COLUMNS: &str = "s.node_id, s.parent_id, s.label, s.kind, s.target, s.rdev_major,
    s.rdev_minor, s.created_ns, s.updated_ns, a.change, a.mode, a.owner, a.owner_group, a.modified_ns,
    a.created_ns, a.hidden";
const SPECIAL_FROM: &str =
    "FROM markbase_nfs_specials s LEFT JOIN markbase_nfs_attrs a ON a.node_id = s.node_id";

/// Special nodes whose folder the app deleted (they cannot be reached):
/// dropped at open, side rows first.
const DROP_ORPHAN_SPECIALS: [&str; 2] = [
    "DELETE FROM markbase_nfs_attrs WHERE node_id IN (SELECT node_id FROM markbase_nfs_specials
       WHERE parent_id IS NOT NULL AND parent_id NOT IN (SELECT node_id FROM file_nodes))",
    "DELETE FROM markbase_nfs_specials
       WHERE parent_id IS NOT NULL AND parent_id NOT IN (SELECT node_id FROM file_nodes)",
];

/// Boot instances of earlier runs remembered (a client away for this many
/// server restarts gets BAD_STATEID rather than STALE_STATEID).
pub const BOOTS_KEPT: i64 = 256;

/// A folder's change attribute before and after an operation (change_info4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirChange {
    pub before: u64,
    pub after: u64,
}

/// A namespace change whose commit the caller must wait for before it
/// replies (group commit).
#[must_use = "reply only after the change is committed"]
pub struct Pending(writer::Commit);

impl Pending {
    /// Blocks until the batch holding the change has committed.
    pub fn wait(self) -> CatalogResult<()> {
        self.0.wait().map_err(CatalogError::Commit)
    }

    /// Runs `then` once the change is committed (or with why it could not
    /// be), without holding this thread meanwhile: on this thread if it
    /// writes the commit itself, else on the thread that does.
    pub fn then(self, then: impl FnOnce(CatalogResult<()>) + Send + 'static) {
        self.0
            .then(Box::new(move |r| then(r.map_err(CatalogError::Commit))));
    }
}

/// A node to create.
#[derive(Debug, Clone)]
pub struct NewNode {
    pub id: NodeId,
    pub kind: NodeKind,
    pub name: String,
    pub content: Option<PathBuf>,
    pub mode: Option<u32>,
    /// A symlink's target or a device's numbers (special kinds only).
    pub special: Option<node::Special>,
    /// Owner and group ids (decimal) to record; `None` = the export's.
    pub owner: Option<String>,
    pub owner_group: Option<String>,
    pub create_verifier: Option<[u8; 8]>,
}

/// What a rename did.
#[derive(Debug)]
pub struct Renamed {
    pub source: DirChange,
    pub target: DirChange,
    /// The node the rename replaced, if any (its content may need removing).
    pub replaced: Option<Arc<Node>>,
}

/// Background writer settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub interval: Duration,
    pub max_batch: usize,
    /// Namespace changes are durable through the intent journal (one
    /// `fdatasync` of a small file per group commit) rather than a synced
    /// SQLite commit each (see `writer.rs`).
    pub journal: bool,
    /// How long SQLite's catch-up gathers journaled batches into one
    /// transaction (the app sees the server's changes this much later).
    pub gather: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            interval: Duration::from_millis(200),
            max_batch: 4096,
            journal: true,
            gather: Duration::from_millis(5),
        }
    }
}

/// A catalog opened for serving.
pub struct Catalog {
    db_path: PathBuf,
    conn: Mutex<Connection>,
    nodes: Cache<NodeId, Arc<Node>>,
    /// Hash → id of text ids too long for a file handle (see `long_id`).
    long_ids: Cache<u64, NodeId>,
    /// Nodes deleted while in memory (by the MarkBase app, or a client's
    /// REMOVE or RENAME over them), for opens that still use them.
    removed: Cache<NodeId, Arc<Node>>,
    listings: Cache<NodeId, SharedListing>,
    pins: Arc<Pins>,
    writer: Writer,
    /// Serialises namespace changes and listing loads, so a listing read
    /// from SQLite never misses a change applied in memory. Lock order:
    /// this lock, then a folder's listing, then a node's metadata. So no
    /// one holding a listing's or a node's lock may call what can load a
    /// listing ([`Catalog::listing`]): a create in that folder holds this
    /// lock and waits for both (see `cursor.rs` for READDIR's walk).
    ns_lock: Mutex<()>,
    root: Arc<Node>,
    shape: CatalogShape,
    /// When two names in a folder are one name.
    names: NameRules,
    /// The next id of a create in a catalog of integer ids: below every
    /// integer id seen, counting down. An app takes its ids above its
    /// largest (SQLite's own choice for an INTEGER PRIMARY KEY), and a
    /// create's row reaches SQLite only after its reply: counting up from
    /// the largest, an app's insert in between took the same id.
    next_int_id: AtomicI64,
    ids: ids::IdSource,
    /// SQL statements run on request threads (the WRITE path must run none).
    statements: AtomicU64,
    /// The least change attribute a folder loaded from SQLite shows: the
    /// open time, raised past every change the app made to a folder in
    /// memory only. A folder's listing can change without its row (the app
    /// inserts a child), so a reload must not show a change attribute a
    /// client may have cached with an older listing, in this run or an
    /// earlier one.
    folder_floor: AtomicU64,
    /// Folders clients listed or looked in lately, re-read first after a
    /// commit when the feed scans (see [`rescan`]); kept only then.
    recent_folders: Cache<NodeId, ()>,
    track_recent: std::sync::atomic::AtomicBool,
    /// The thread that applies the MarkBase app's changes (see [`feed`]).
    feed: Mutex<Option<feed::Feed>>,
    /// Held while this catalog is open: one server per catalog.
    _lock: std::fs::File,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("db_path", &self.db_path)
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// Opens (creating the schema if needed) the catalog at `db_path`.
    pub fn open(db_path: &Path, cache: &CacheConfig) -> anyhow::Result<Catalog> {
        Self::open_with(db_path, cache, WriterConfig::default())
    }

    pub fn open_with(
        db_path: &Path,
        cache: &CacheConfig,
        writer: WriterConfig,
    ) -> anyhow::Result<Catalog> {
        let lock = lock_catalog(db_path)?;
        let conn = open_or_create(db_path)?;
        // Two writers on one file (the app and us): readers must not block
        // the writer, nor the writer readers.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .with_context(|| format!("setting WAL on {}", db_path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(db = %db_path.display(), mode, "catalog is not in WAL mode: the app and the server will block each other more");
        }
        let shape =
            schema::shape_of(&conn).with_context(|| format!("inspecting {}", db_path.display()))?;
        // What a crash left in the intent journal goes into SQLite before
        // anything reads the catalog.
        let (records, changes) = writer::replay_journal(db_path, shape)?;
        if records > 0 {
            tracing::info!(
                records,
                changes,
                "replayed the catalog's intent journal after an unclean stop"
            );
        }
        let mut orphans = 0;
        for sql in DROP_ORPHAN_SPECIALS {
            orphans = conn.execute(sql, []).with_context(|| {
                format!(
                    "dropping unreachable special nodes in {}",
                    db_path.display()
                )
            })?;
        }
        if orphans > 0 {
            tracing::info!(
                orphans,
                "dropped symlinks and special files whose folder the app deleted"
            );
        }
        // The root has no row: it shows the catalog's oldest creation and
        // newest change.
        let (created, updated, change, min_int): (Option<i64>, Option<i64>, Option<i64>, Option<i64>) =
            conn.query_row(
                "SELECT (SELECT MIN(created_at) FROM file_nodes), (SELECT MAX(updated_at) FROM file_nodes),
                        (SELECT MAX(change) FROM markbase_nfs_attrs),
                        (SELECT MIN(node_id) FROM file_nodes WHERE typeof(node_id) = 'integer')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .with_context(|| format!("reading {}", db_path.display()))?;
        let modified = node::timestamp_to_ns(updated.unwrap_or(0));
        let root = Arc::new(Node::new(
            NodeId::Root,
            NodeKind::Folder,
            node::timestamp_to_ns(created.unwrap_or(0)),
            NodeMeta {
                size: 4096,
                modified_ns: modified,
                accessed_ns: modified,
                // At least the open time: the app may have changed the
                // top level while no server ran (see `folder_floor`).
                change: (modified.max(0) as u64)
                    .max(change.unwrap_or(0).max(0) as u64)
                    .max(now_ns().max(0) as u64),
                ..NodeMeta::default()
            },
        ));
        let pins = Arc::new(Pins::default());
        let writer = Writer::start(
            db_path,
            shape,
            pins.clone(),
            writer.interval,
            writer.max_batch,
            writer.journal,
            writer.gather,
        )?;
        let listings = Cache::builder()
            .weigher(|_k: &NodeId, v: &SharedListing| (v.read().len() as u32).saturating_add(1))
            .max_capacity(cache.paths.max(1))
            .build();
        Ok(Catalog {
            db_path: db_path.to_path_buf(),
            conn: Mutex::new(conn),
            nodes: Cache::new(cache.nodes.max(1)),
            long_ids: Cache::new(4096),
            removed: Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            listings,
            pins,
            writer,
            ns_lock: Mutex::new(()),
            root,
            shape,
            names: NameRules::default(),
            next_int_id: AtomicI64::new(min_int.unwrap_or(0).min(0).saturating_sub(1)),
            ids: ids::IdSource::new(),
            statements: AtomicU64::new(0),
            folder_floor: AtomicU64::new(now_ns().max(0) as u64),
            recent_folders: Cache::builder()
                .max_capacity(rescan::RECENT_FOLDERS)
                .time_to_live(rescan::RECENT_FOR)
                .build(),
            track_recent: std::sync::atomic::AtomicBool::new(false),
            feed: Mutex::new(None),
            _lock: lock,
        })
    }

    /// Starts applying the MarkBase app's committed changes, polled every
    /// `every` (see [`feed`]): through our triggers, or, where the catalog
    /// cannot take them or `mode` asks, by re-reading what the server holds.
    pub fn start_feed(self: &Arc<Self>, every: Duration, mode: FeedMode) -> anyhow::Result<()> {
        let (mode, after) = {
            let conn = self.conn.lock();
            let mode = match mode {
                FeedMode::Triggers if feed::install(&conn) => FeedMode::Triggers,
                FeedMode::Triggers => FeedMode::Scan,
                FeedMode::Scan => {
                    feed::uninstall(&conn);
                    FeedMode::Scan
                }
            };
            let after = match mode {
                FeedMode::Triggers => {
                    let after = feed::newest(&conn)?;
                    // Older rows are in the table's current state, which is
                    // what the server loads: they can go.
                    let _ =
                        conn.execute("DELETE FROM markbase_nfs_changes WHERE seq <= ?1", [after]);
                    after
                }
                FeedMode::Scan => 0,
            };
            (mode, after)
        };
        // Where the feed scans, folders in use go first.
        self.track_recent
            .store(mode == FeedMode::Scan, Ordering::Relaxed);
        let f = feed::Feed::start(Arc::downgrade(self), &self.db_path, mode, after, every)?;
        *self.feed.lock() = Some(f);
        Ok(())
    }

    /// A node deleted (by the MarkBase app or a client) or retyped while it
    /// was in memory: an open of it keeps reading and writing its content
    /// until CLOSE (RFC 7530 §16.25: a removed file stays usable through
    /// the opens of it).
    pub fn removed(&self, id: &NodeId) -> Option<Arc<Node>> {
        self.removed.get(id)
    }

    /// What the change feed has applied (None without a feed).
    pub fn feed_stats(&self) -> Option<Arc<FeedStats>> {
        self.feed.lock().as_ref().map(|f| f.stats.clone())
    }

    /// Makes names compare under `rules` (set before serving: listings
    /// already loaded keep the rules they were built with).
    pub fn with_name_rules(mut self, rules: NameRules) -> Catalog {
        self.names = rules;
        self.listings.invalidate_all();
        self
    }

    /// Gives the root the file id `fileid` (set before serving): an export
    /// under a pseudo-root shows one of its own (see
    /// `crate::export::root_fileid`).
    pub fn with_root_fileid(mut self, fileid: u64) -> Catalog {
        match Arc::get_mut(&mut self.root) {
            Some(root) => root.fileid = fileid,
            None => {
                let mut root = Node::new(
                    NodeId::Root,
                    NodeKind::Folder,
                    self.root.created_ns,
                    self.root.meta().clone(),
                );
                root.fileid = fileid;
                self.root = Arc::new(root);
            }
        }
        self
    }

    pub fn name_rules(&self) -> NameRules {
        self.names
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    pub fn root(&self) -> Arc<Node> {
        self.root.clone()
    }

    /// SQL statements run on request threads since open.
    pub fn statements_run(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    pub fn writer_stats(&self) -> &WriterStats {
        &self.writer.stats
    }

    /// (pinned nodes, pinned listings): what waits for the writer.
    pub fn pinned(&self) -> (usize, usize) {
        self.pins.counts()
    }

    /// The node named by `id`.
    pub fn node(&self, id: &NodeId) -> CatalogResult<Arc<Node>> {
        if id.is_root() {
            return Ok(self.root.clone());
        }
        let node = match self.pins.node(id) {
            Some(n) => n,
            None => match self.nodes.get(id) {
                Some(n) => n,
                None if memory_only::refused() => {
                    return Err(CatalogError::NotInMemory(id.clone()))
                }
                None => self
                    .nodes
                    .try_get_with(id.clone(), || self.load_node(id))
                    .map_err(|e| match &*e {
                        CatalogError::NotFound(id) => CatalogError::NotFound(id.clone()),
                        other => CatalogError::Commit(other.to_string()),
                    })?,
            },
        };
        if node.meta().deleted {
            return Err(CatalogError::NotFound(id.clone()));
        }
        Ok(node)
    }

    fn load_node(&self, id: &NodeId) -> CatalogResult<Arc<Node>> {
        let conn = self.conn.lock();
        self.statements.fetch_add(1, Ordering::Relaxed);
        if id.is_special() {
            let sql = format!("SELECT {SPECIAL_COLUMNS} {SPECIAL_FROM} WHERE s.node_id = ?1");
            let node = conn
                .prepare_cached(&sql)
                .and_then(|mut st| {
                    st.query_row([id.to_sql()], Node::from_special_row)
                        .optional()
                })
                .map_err(sql_err(format!("load special node {id}")))?;
            return node
                .flatten()
                .map(Arc::new)
                .ok_or_else(|| CatalogError::NotFound(id.clone()));
        }
        let sql = format!("SELECT {NODE_COLUMNS} {NODE_FROM} WHERE f.node_id = ?1");
        let node = conn
            .prepare_cached(&sql)
            .and_then(|mut st| {
                st.query_row([id.to_sql()], |r| self.node_from_row(r))
                    .optional()
            })
            .map_err(sql_err(format!("load node {id}")))?;
        Ok(Arc::new(
            node.ok_or_else(|| CatalogError::NotFound(id.clone()))?,
        ))
    }

    /// The text id that starts with `prefix` and hashes (FNV-1a) to `hash`:
    /// how a file handle names a node whose id is too long to carry.
    pub fn long_id(&self, prefix: &str, hash: u64) -> CatalogResult<Option<NodeId>> {
        if let Some(id) = self.long_ids.get(&hash) {
            return Ok(Some(id));
        }
        if memory_only::refused() {
            return Err(CatalogError::NotInMemory(NodeId::text(prefix)));
        }
        let conn = self.conn.lock();
        self.statements.fetch_add(1, Ordering::Relaxed);
        // Every id with this prefix sorts in [prefix, prefix + U+10FFFF):
        // a range of the primary key's index, not a scan.
        let upper = format!("{prefix}\u{10FFFF}");
        let found = conn
            .prepare_cached(
                "SELECT node_id FROM file_nodes WHERE node_id >= ?1 AND node_id < ?2
                   AND typeof(node_id) = 'text'",
            )
            .and_then(|mut st| {
                let ids = st
                    .query_map(params![prefix, upper], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ids.into_iter().find(|id| fnv1a(id.as_bytes()) == hash))
            })
            .map_err(sql_err(format!(
                "resolve a long node id starting {prefix:?}"
            )))?;
        let id = found.map(|s| NodeId::text(&s));
        if let Some(id) = &id {
            self.long_ids.insert(hash, id.clone());
        }
        Ok(id)
    }

    /// The children of folder `dir`.
    pub fn listing(&self, dir: &NodeId) -> CatalogResult<SharedListing> {
        if self.track_recent.load(Ordering::Relaxed) {
            self.recent_folders.insert(dir.clone(), ());
        }
        if let Some(l) = self.pins.listing(dir) {
            return Ok(l);
        }
        if let Some(l) = self.listings.get(dir) {
            return Ok(l);
        }
        if memory_only::refused() {
            return Err(CatalogError::NotInMemory(dir.clone()));
        }
        let _ns = self.ns_lock.lock();
        self.listing_locked(dir)
    }

    /// `listing` for callers holding `ns_lock`.
    fn listing_locked(&self, dir: &NodeId) -> CatalogResult<SharedListing> {
        if let Some(l) = self.pins.listing(dir) {
            return Ok(l);
        }
        if let Some(l) = self.listings.get(dir) {
            return Ok(l);
        }
        let parent = self.node(dir)?;
        if parent.kind != NodeKind::Folder {
            return Err(CatalogError::NotFolder(dir.clone()));
        }
        let rows = self.children_rows(dir)?;
        // Keep one instance per node: a node already in memory (maybe with
        // changes not yet persisted) wins over its row.
        let children: Vec<Arc<Node>> = rows
            .into_iter()
            .map(|n| match self.pins.node(&n.id) {
                Some(p) => p,
                None => {
                    let id = n.id.clone();
                    self.nodes.get_with(id, || Arc::new(n))
                }
            })
            .collect();
        let listing = Arc::new(RwLock::new(Listing::build(&children, self.names)));
        self.listings.insert(dir.clone(), listing.clone());
        Ok(listing)
    }

    /// The rows of `dir`'s children, as nodes (not the held instances).
    fn children_rows(&self, dir: &NodeId) -> CatalogResult<Vec<Node>> {
        let conn = self.conn.lock();
        self.statements.fetch_add(1, Ordering::Relaxed);
        let rows = if dir.is_root() {
            let sql = format!(
                "SELECT {NODE_COLUMNS} {NODE_FROM} WHERE f.parent_id IS NULL OR f.parent_id = ''"
            );
            conn.prepare_cached(&sql).and_then(|mut st| {
                st.query_map([], |r| self.node_from_row(r))?
                    .collect::<Result<Vec<_>, _>>()
            })
        } else {
            let sql = format!("SELECT {NODE_COLUMNS} {NODE_FROM} WHERE f.parent_id = ?1");
            conn.prepare_cached(&sql).and_then(|mut st| {
                st.query_map(params![dir.to_sql()], |r| self.node_from_row(r))?
                    .collect::<Result<Vec<_>, _>>()
            })
        }
        .map_err(sql_err(format!("list children of {dir}")))?;
        let specials = if dir.is_root() {
            let sql = format!("SELECT {SPECIAL_COLUMNS} {SPECIAL_FROM} WHERE s.parent_id IS NULL");
            conn.prepare_cached(&sql).and_then(|mut st| {
                st.query_map([], Node::from_special_row)?
                    .collect::<Result<Vec<_>, _>>()
            })
        } else {
            let sql = format!("SELECT {SPECIAL_COLUMNS} {SPECIAL_FROM} WHERE s.parent_id = ?1");
            conn.prepare_cached(&sql).and_then(|mut st| {
                st.query_map(params![dir.to_sql()], Node::from_special_row)?
                    .collect::<Result<Vec<_>, _>>()
            })
        }
        .map_err(sql_err(format!("list special children of {dir}")))?;
        let mut rows = rows;
        rows.extend(specials.into_iter().flatten());
        Ok(rows)
    }

    /// The child of `dir` shown as `name`.
    pub fn lookup(&self, dir: &NodeId, name: &str) -> CatalogResult<Option<Arc<Node>>> {
        let listing = self.listing(dir)?;
        let id = listing.read().get(name).map(|e| e.id.clone());
        match id {
            Some(id) => self.node(&id).map(Some),
            None => Ok(None),
        }
    }

    /// The parent folder of `node` (the root is its own parent).
    pub fn parent_of(&self, node: &Node) -> CatalogResult<Arc<Node>> {
        let parent = node.meta().parent.clone();
        match parent {
            None => Ok(self.root.clone()),
            Some(p) => self.node(&p),
        }
    }

    /// Number of nodes in the catalog, as committed.
    pub fn count(&self) -> CatalogResult<u64> {
        let conn = self.conn.lock();
        self.statements.fetch_add(1, Ordering::Relaxed);
        conn.query_row("SELECT COUNT(*) FROM file_nodes", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| n as u64)
        .map_err(sql_err("count nodes"))
    }

    /// A commit holding no change, in line behind every change submitted
    /// so far: once it is answered, they are all durable (or failed). A
    /// replayed reply waits for it, as its first sending waited for the
    /// change it reports.
    pub fn sync_point(&self) -> Pending {
        Pending(self.writer.submit(Vec::new(), Vec::new()))
    }

    /// Persists everything queued so far.
    pub fn flush(&self) -> CatalogResult<()> {
        self.writer.flush().map_err(CatalogError::Commit)
    }

    /// Sets what must be on disk before the catalog's journal forgets
    /// records (see `writer::DurableHook`).
    pub fn before_durable(&self, hook: DurableHook) {
        self.writer.before_durable(hook);
    }

    /// Holds the intent journal's writer (tests): namespace changes queue
    /// and nobody writes them until the guard goes.
    #[cfg(test)]
    pub(crate) fn hold_journal(&self) -> writer::JournalHeld<'_> {
        self.writer.hold_journal()
    }

    /// Flushes and stops the background writer.
    pub fn shutdown(&self) {
        self.writer.stop();
    }
}

impl Drop for Catalog {
    fn drop(&mut self) {
        if let Some(f) = self.feed.lock().take() {
            f.stop();
        }
        self.writer.stop();
    }
}

/// Takes `<db>.markbase-nfs.lock` (flock, released when the process ends):
/// a second server on the same catalog would undo the first one's changes.
fn lock_catalog(db: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let mut name = db.as_os_str().to_owned();
    name.push(".markbase-nfs.lock");
    let path = PathBuf::from(name);
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating folder {}", dir.display()))?;
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        anyhow::bail!(
            "catalog {} is already served by another markbase-nfs ({}); one server per catalog",
            db.display(),
            holder.trim()
        );
    }
    file.set_len(0)?;
    write!(file, "pid {}", std::process::id())?;
    Ok(file)
}

impl NodeId {
    pub(crate) fn to_sql(&self) -> Value {
        match self {
            NodeId::Root => Value::Null,
            NodeId::Int(i) => Value::Integer(*i),
            NodeId::Text(s) => Value::Text(s.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
