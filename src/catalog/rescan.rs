//! Finding the MarkBase app's edits by re-reading what the server holds:
//! the change feed's way when the catalog has no triggers of ours
//! (`catalog.feed = "scan"`, a catalog that cannot take them), and its way
//! to catch up after an app migration dropped them.
//!
//! Only what is in memory can be stale: folder listings and nodes. A pass
//! ([`ScanCycle`]) re-reads each held listing's children and each other
//! held node, a bounded share per poll, and hands what differs from the row
//! to [`Catalog::apply_external`], as if the feed had reported it. A folder
//! whose rows hash as at its last comparison is not compared again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::names::{component_for_label, distinguish};
use super::node::{Node, NodeId};
use super::{Catalog, FeedChange, NODE_COLUMNS, NODE_FROM};
use rusqlite::types::ValueRef;
use rusqlite::OptionalExtension;

/// FNV-1a, fed piecewise.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn eat(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Folders clients used within [`RECENT_FOR`] (at most this many) are
/// re-read at once after a commit, before the pass over everything held:
/// the folder an editor has open in Finder shows the app's edit in about a
/// poll, however many folders the server holds.
pub(crate) const RECENT_FOLDERS: u64 = 64;
pub(crate) const RECENT_FOR: Duration = Duration::from_secs(10);

/// Re-reads the folders clients used lately (see [`RECENT_FOLDERS`]);
/// returns how many were read and how many changes were applied.
pub(crate) fn recent_pass(catalog: &Catalog, prints: &mut Fingerprints) -> (u64, u64) {
    let recent: Vec<NodeId> = catalog
        .recent_folders
        .iter()
        .map(|(k, _)| (*k).clone())
        .collect();
    let (mut read, mut applied) = (0, 0);
    for dir in recent {
        read += 1;
        applied += compare_folder(catalog, prints, dir);
    }
    (read, applied)
}

/// Compares a held folder with its rows unless they hash as at its last
/// comparison; returns the changes applied.
fn compare_folder(catalog: &Catalog, prints: &mut Fingerprints, dir: NodeId) -> u64 {
    if !catalog.listings.contains_key(&dir) {
        return 0;
    }
    let Ok(print) = catalog.folder_fingerprint(&dir) else {
        return 0;
    };
    if prints.0.get(&dir) == Some(&print) {
        return 0;
    }
    match catalog.differences_in_folder(&dir) {
        Some(changes) => {
            prints.0.insert(dir, print);
            apply_all(catalog, changes)
        }
        None => 0,
    }
}

/// Per held folder, a hash of its children's rows (the app's columns) when
/// it was last compared: a folder whose rows hash the same is not compared
/// again, which spares parsing every row of every held folder each pass.
#[derive(Default)]
pub(crate) struct Fingerprints(HashMap<NodeId, u64>);

/// One pass over the folders and nodes held when it started.
pub(crate) struct ScanCycle {
    folders: Vec<NodeId>,
    nodes: Vec<NodeId>,
}

impl ScanCycle {
    /// A pass over what `catalog` holds now; fingerprints of folders no
    /// longer held go.
    pub fn of(catalog: &Catalog, prints: &mut Fingerprints) -> ScanCycle {
        let folders: Vec<NodeId> = catalog.listings.iter().map(|(k, _)| (*k).clone()).collect();
        prints.0.retain(|id, _| catalog.listings.contains_key(id));
        // Nodes whose folder's listing is re-read are checked there.
        let nodes = catalog
            .nodes
            .iter()
            .filter(|(_, n)| {
                let parent = n.meta().parent.clone().unwrap_or(NodeId::Root);
                !catalog.listings.contains_key(&parent)
            })
            .map(|(k, _)| (*k).clone())
            .collect();
        ScanCycle { folders, nodes }
    }

    /// Re-reads up to `folders` listings and `nodes` nodes, stopping early
    /// once `budget` has passed; returns how many were read and how many
    /// changes were applied.
    pub fn step(
        &mut self,
        catalog: &Catalog,
        prints: &mut Fingerprints,
        (folders, nodes): (usize, usize),
        budget: Duration,
    ) -> (u64, u64) {
        let start = Instant::now();
        let (mut read, mut applied) = (0u64, 0u64);
        for _ in 0..folders {
            if start.elapsed() > budget {
                return (read, applied);
            }
            let Some(dir) = self.folders.pop() else {
                break;
            };
            read += 1;
            applied += compare_folder(catalog, prints, dir);
        }
        for _ in 0..nodes {
            if start.elapsed() > budget {
                break;
            }
            let Some(id) = self.nodes.pop() else {
                break;
            };
            read += 1;
            applied += apply_all(catalog, catalog.difference_of_node(&id));
        }
        (read, applied)
    }

    pub fn is_done(&self) -> bool {
        self.folders.is_empty() && self.nodes.is_empty()
    }
}

fn apply_all(catalog: &Catalog, changes: Vec<FeedChange>) -> u64 {
    for c in &changes {
        catalog.apply_external(c);
    }
    changes.len() as u64
}

/// Whether `shown` is the name a listing gives `row` (its label, maybe
/// with the suffix that tells alike names apart).
fn shows_label(shown: &str, row: &Node) -> bool {
    let name = component_for_label(&row.meta().label, row.fileid);
    shown == name || shown == distinguish(&name, row.fileid)
}

impl Catalog {
    /// What differs between the held listing of `dir` (and the nodes in
    /// it) and the rows of its children: each as a feed change.
    /// None when it could not compare (not held, a namespace change of
    /// ours in flight, a read error): the folder is compared next pass.
    fn differences_in_folder(&self, dir: &NodeId) -> Option<Vec<FeedChange>> {
        let _ns = self.ns_lock.lock();
        // A namespace change of ours not committed yet: the rows are behind
        // the listing, not the app ahead of it. The next pass sees it.
        if self.pins.listing(dir).is_some() {
            return None;
        }
        let listing = self.listings.get(dir)?;
        let rows = match self.children_rows(dir) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(folder = %dir, error = %e, "re-reading a folder");
                return None;
            }
        };
        let listing = listing.read();
        let mut shown: HashMap<u64, (&str, &NodeId, super::NodeKind)> = listing
            .entries()
            .map(|e| (e.id.fileid(), (e.name.as_str(), &e.id, e.kind)))
            .collect();
        let parent = (!dir.is_root()).then(|| dir.clone());
        let mut changes = Vec::new();
        for row in &rows {
            let differs = match shown.remove(&row.fileid) {
                None => true,
                Some((name, _, kind)) => {
                    kind != row.kind
                        || !shows_label(name, row)
                        || self.held(&row.id).is_some_and(|n| n.differs_from(row))
                }
            };
            if differs {
                changes.push(FeedChange {
                    node: row.id.clone(),
                    old_parent: parent.clone(),
                    new_parent: row.meta().parent.clone(),
                });
            }
        }
        // Shown here, no row here: deleted, or moved to another folder.
        for (_, (_, id, _)) in shown {
            changes.push(FeedChange {
                node: id.clone(),
                old_parent: parent.clone(),
                new_parent: None,
            });
        }
        Some(changes)
    }

    /// A hash of the app's columns of `dir`'s children, read without
    /// building nodes.
    fn folder_fingerprint(&self, dir: &NodeId) -> rusqlite::Result<u64> {
        let conn = self.conn.lock();
        let columns = "node_id, label, node_type, aliases_json, file_size, updated_at";
        let (sql, arg) = if dir.is_root() {
            (
                format!(
                    "SELECT {columns} FROM file_nodes WHERE parent_id IS NULL OR parent_id = ''"
                ),
                None,
            )
        } else {
            (
                format!("SELECT {columns} FROM file_nodes WHERE parent_id = ?1"),
                Some(dir.to_sql()),
            )
        };
        let mut st = conn.prepare_cached(&sql)?;
        let mut rows = match &arg {
            Some(a) => st.query([a])?,
            None => st.query([])?,
        };
        let mut hash = Fnv::default();
        while let Some(row) = rows.next()? {
            for i in 0..6 {
                match row.get_ref(i)? {
                    ValueRef::Null => hash.eat(&[0]),
                    ValueRef::Integer(v) => {
                        hash.eat(&[1]);
                        hash.eat(&v.to_le_bytes());
                    }
                    ValueRef::Real(v) => {
                        hash.eat(&[2]);
                        hash.eat(&v.to_le_bytes());
                    }
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        hash.eat(&[3]);
                        hash.eat(&(t.len() as u64).to_le_bytes());
                        hash.eat(t);
                    }
                }
            }
        }
        Ok(hash.0)
    }

    /// What differs between a held node and its row, as a feed change.
    fn difference_of_node(&self, id: &NodeId) -> Vec<FeedChange> {
        let _ns = self.ns_lock.lock();
        let Some(held) = self.held(id) else {
            return Vec::new();
        };
        if held.meta().deleted {
            return Vec::new();
        }
        let row = {
            let conn = self.conn.lock();
            let sql = format!("SELECT {NODE_COLUMNS} {NODE_FROM} WHERE f.node_id = ?1");
            conn.prepare_cached(&sql).and_then(|mut st| {
                st.query_row([id.to_sql()], |r| self.node_from_row(r))
                    .optional()
            })
        };
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(node = %id, error = %e, "re-reading a node");
                return Vec::new();
            }
        };
        let old_parent = held.meta().parent.clone();
        match row {
            Some(r) if r.kind == held.kind && !held.differs_from(&r) => Vec::new(),
            row => vec![FeedChange {
                node: id.clone(),
                old_parent,
                new_parent: row.and_then(|r| r.meta().parent.clone()),
            }],
        }
    }

    /// The in-memory instance of a node, if any.
    fn held(&self, id: &NodeId) -> Option<Arc<Node>> {
        self.pins.node(id).or_else(|| self.nodes.get(id))
    }
}
