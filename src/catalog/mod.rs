//! The MarkBase catalog: the `file_nodes` table of a user's SQLite database,
//! seen through memory-first caches.
//!
//! Nodes and directory listings are loaded from SQLite on first use and kept
//! in moka caches; a LOOKUP of `(folder, name)` is answered from the folder's
//! cached listing, which is also what READDIR pages through, so the two can
//! never disagree about a name. This layer knows SQL and nothing of NFS.

mod gen;
mod import;
mod node;
mod schema;

pub use gen::{generate, GenOptions, GenSummary};
pub use import::{import_tree, ImportSummary};
pub use node::{Listing, ListingEntry, Node, NodeId, NodeKind};
pub use schema::{create_demo, open_or_create};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use moka::sync::Cache;
use parking_lot::Mutex;
use rusqlite::{params, types::Value, Connection, OptionalExtension};
use thiserror::Error;

use crate::config::CacheConfig;

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("node {0} not found in the catalog")]
    NotFound(NodeId),
    #[error("node {0} is not a folder")]
    NotFolder(NodeId),
    #[error("catalog query failed ({what}): {source}")]
    Sql {
        what: String,
        #[source]
        source: rusqlite::Error,
    },
}

pub type CatalogResult<T> = Result<T, CatalogError>;

fn sql_err(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> CatalogError {
    let what = what.into();
    move |source| CatalogError::Sql { what, source }
}

const NODE_COLUMNS: &str =
    "node_id, parent_id, label, node_type, aliases_json, file_size, created_at, updated_at";

/// A catalog opened for serving.
pub struct Catalog {
    db_path: PathBuf,
    conn: Mutex<Connection>,
    nodes: Cache<NodeId, Arc<Node>>,
    listings: Cache<NodeId, Arc<Listing>>,
    root: Arc<Node>,
    /// SQL statements run since open (tests use it to prove a path is
    /// served from memory).
    statements: AtomicU64,
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
        let conn = open_or_create(db_path)?;
        let listings = Cache::builder()
            .weigher(|_k: &NodeId, v: &Arc<Listing>| (v.entries.len() as u32).saturating_add(1))
            .max_capacity(cache.paths.max(1))
            .build();
        // The root has no row: it shows the catalog's oldest creation and
        // newest update.
        let (created, updated): (Option<i64>, Option<i64>) = conn
            .query_row(
                "SELECT MIN(created_at), MAX(updated_at) FROM file_nodes",
                [],
                |r| Ok((r.get(0).ok(), r.get(1).ok())),
            )
            .with_context(|| format!("reading timestamps of {}", db_path.display()))?;
        let mut root = Node::root();
        root.created_ns = node::timestamp_to_ns(created.unwrap_or(0));
        root.modified_ns = node::timestamp_to_ns(updated.unwrap_or(0)).max(root.created_ns);
        Ok(Catalog {
            db_path: db_path.to_path_buf(),
            conn: Mutex::new(conn),
            nodes: Cache::new(cache.nodes.max(1)),
            listings,
            root: Arc::new(root),
            statements: AtomicU64::new(0),
        })
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    pub fn root(&self) -> Arc<Node> {
        self.root.clone()
    }

    pub fn statements_run(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// The node named by `id`.
    pub fn node(&self, id: &NodeId) -> CatalogResult<Arc<Node>> {
        if id.is_root() {
            return Ok(self.root.clone());
        }
        if let Some(n) = self.nodes.get(id) {
            return Ok(n);
        }
        let conn = self.conn.lock();
        self.statements.fetch_add(1, Ordering::Relaxed);
        let sql = format!("SELECT {NODE_COLUMNS} FROM file_nodes WHERE node_id = ?1");
        let node = conn
            .prepare_cached(&sql)
            .and_then(|mut st| st.query_row([id.to_sql()], Node::from_row).optional())
            .map_err(sql_err(format!("load node {id}")))?;
        drop(conn);
        let node = Arc::new(node.ok_or_else(|| CatalogError::NotFound(id.clone()))?);
        self.nodes.insert(id.clone(), node.clone());
        Ok(node)
    }

    /// The children of folder `dir`, sorted by cookie, with NFS-safe unique
    /// names.
    pub fn listing(&self, dir: &NodeId) -> CatalogResult<Arc<Listing>> {
        if let Some(l) = self.listings.get(dir) {
            return Ok(l);
        }
        let parent = self.node(dir)?;
        if parent.kind != NodeKind::Folder {
            return Err(CatalogError::NotFolder(dir.clone()));
        }
        let conn = self.conn.lock();
        self.statements.fetch_add(1, Ordering::Relaxed);
        let children: Vec<Node> = if dir.is_root() {
            let sql = format!(
                "SELECT {NODE_COLUMNS} FROM file_nodes WHERE parent_id IS NULL OR parent_id = ''"
            );
            conn.prepare_cached(&sql).and_then(|mut st| {
                st.query_map([], Node::from_row)?
                    .collect::<Result<Vec<_>, _>>()
            })
        } else {
            let sql = format!("SELECT {NODE_COLUMNS} FROM file_nodes WHERE parent_id = ?1");
            conn.prepare_cached(&sql).and_then(|mut st| {
                st.query_map(params![dir.to_sql()], Node::from_row)?
                    .collect::<Result<Vec<_>, _>>()
            })
        }
        .map_err(sql_err(format!("list children of {dir}")))?;
        drop(conn);
        let children: Vec<Arc<Node>> = children
            .into_iter()
            .map(|n| {
                let n = Arc::new(n);
                self.nodes.insert(n.id.clone(), n.clone());
                n
            })
            .collect();
        let listing = Arc::new(Listing::build(children));
        self.listings.insert(dir.clone(), listing.clone());
        Ok(listing)
    }

    /// The child of `dir` shown as `name`.
    pub fn lookup(&self, dir: &NodeId, name: &str) -> CatalogResult<Option<Arc<Node>>> {
        Ok(self.listing(dir)?.get(name).map(|e| e.node.clone()))
    }

    /// The parent folder of `node` (the root is its own parent).
    pub fn parent_of(&self, node: &Node) -> CatalogResult<Arc<Node>> {
        match &node.parent {
            None => Ok(self.root.clone()),
            Some(p) => self.node(p),
        }
    }

    /// Number of nodes in the catalog.
    pub fn count(&self) -> CatalogResult<u64> {
        let conn = self.conn.lock();
        self.statements.fetch_add(1, Ordering::Relaxed);
        conn.query_row("SELECT COUNT(*) FROM file_nodes", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| n as u64)
        .map_err(sql_err("count nodes"))
    }
}

impl NodeId {
    fn to_sql(&self) -> Value {
        match self {
            NodeId::Root => Value::Null,
            NodeId::Int(i) => Value::Integer(*i),
            NodeId::Text(s) => Value::Text(s.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
