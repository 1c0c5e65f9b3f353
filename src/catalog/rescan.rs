//! Finding the MarkBase app's edits by re-reading what the server holds:
//! the change feed's way when the catalog has no triggers of ours
//! (`catalog.feed = "scan"`, a catalog that cannot take them), and its way
//! to catch up after an app migration dropped them.
//!
//! Only what is in memory can be stale: folder listings and nodes. A pass
//! ([`ScanCycle`]) re-reads each held listing's children and each other
//! held node, a bounded share per poll, and hands what differs from the row
//! to [`Catalog::apply_external`], as if the feed had reported it.

use std::collections::HashMap;
use std::sync::Arc;

use super::names::{component_for_label, distinguish};
use super::node::{Node, NodeId};
use super::{Catalog, FeedChange, NODE_COLUMNS, NODE_FROM};
use rusqlite::OptionalExtension;

/// One pass over the folders and nodes held when it started.
pub(crate) struct ScanCycle {
    folders: Vec<NodeId>,
    nodes: Vec<NodeId>,
}

impl ScanCycle {
    /// A pass over what `catalog` holds now.
    pub fn of(catalog: &Catalog) -> ScanCycle {
        let folders: Vec<NodeId> = catalog.listings.iter().map(|(k, _)| (*k).clone()).collect();
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

    /// Re-reads up to `folders` listings and `nodes` nodes; returns how
    /// many were read and how many changes were applied.
    pub fn step(&mut self, catalog: &Catalog, folders: usize, nodes: usize) -> (u64, u64) {
        let (mut read, mut applied) = (0u64, 0u64);
        for _ in 0..folders {
            let Some(dir) = self.folders.pop() else {
                break;
            };
            read += 1;
            applied += apply_all(catalog, catalog.differences_in_folder(&dir));
        }
        for _ in 0..nodes {
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
    fn differences_in_folder(&self, dir: &NodeId) -> Vec<FeedChange> {
        let _ns = self.ns_lock.lock();
        // A namespace change of ours not committed yet: the rows are behind
        // the listing, not the app ahead of it. The next pass sees it.
        if self.pins.listing(dir).is_some() {
            return Vec::new();
        }
        let Some(listing) = self.listings.get(dir) else {
            return Vec::new();
        };
        let rows = match self.children_rows(dir) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(folder = %dir, error = %e, "re-reading a folder");
                return Vec::new();
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
        changes
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
