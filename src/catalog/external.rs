//! The MarkBase app's commits, as the change feed reports them, applied to
//! the nodes and listings the catalog holds in memory. Part of [`Catalog`].

use super::*;

impl Catalog {
    /// Applies one change the MarkBase app committed: the node's row as it
    /// is now (moved, renamed, resized, retyped, deleted, or new) reaches the
    /// node in memory, the listings of its old and new folder (where
    /// loaded) and the change attribute of all three, so clients
    /// revalidate. READDIR cookies stay valid: they derive from fileids.
    pub fn apply_external(&self, change: &FeedChange) {
        // Special nodes are the server's alone: the app has no row of them
        // to change (a scan may report one whose change of ours is not yet
        // committed).
        if change.node.is_special() {
            return;
        }
        // An integer id the app took is not handed out to a create (its
        // row would be written over the app's node): creates count down
        // from below every id seen.
        if let NodeId::Int(i) = change.node {
            self.next_int_id
                .fetch_min(i.saturating_sub(1), Ordering::Relaxed);
        }
        let _ns = self.ns_lock.lock();
        let row = {
            let conn = self.conn.lock();
            let sql = format!("SELECT {NODE_COLUMNS} {NODE_FROM} WHERE f.node_id = ?1");
            conn.prepare_cached(&sql).and_then(|mut st| {
                st.query_row([change.node.to_sql()], |r| self.node_from_row(r))
                    .optional()
            })
        };
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(node = %change.node, error = %e, "reading a changed node");
                return;
            }
        };
        let held = self
            .pins
            .node(&change.node)
            .or_else(|| self.nodes.get(&change.node));
        // Folders whose listing may hold the node, before and after.
        let mut dirs: Vec<NodeId> = Vec::new();
        let mut add_dir = |p: Option<NodeId>| {
            let d = p.unwrap_or(NodeId::Root);
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        };
        add_dir(change.old_parent.clone());
        if let Some(n) = &held {
            add_dir(n.meta().parent.clone());
        }
        if let Some(r) = &row {
            add_dir(r.meta().parent.clone());
        }
        let fileid = change.node.fileid();
        let node = match (held, row) {
            (Some(n), Some(r)) if n.kind == r.kind => {
                n.refresh_from(&r);
                if n.kind == NodeKind::File {
                    // The moved change attribute goes to our side table,
                    // so a reload (eviction, restart) never shows the one
                    // from before the app's change again.
                    self.queue_for_writer(&n);
                }
                Some(n)
            }
            (held, row) => {
                // New, deleted or retyped: the old instance goes (kept
                // aside for opens that still use it).
                if let Some(n) = held {
                    n.update(|m| m.deleted = true);
                    self.removed.insert(n.id.clone(), n.clone());
                    self.pins.forget_node(&n.id);
                    self.nodes.invalidate(&n.id);
                    self.listings.invalidate(&n.id);
                }
                row.map(|r| {
                    let r = Arc::new(r);
                    self.nodes.insert(r.id.clone(), r.clone());
                    r
                })
            }
        };
        let new_dir = node
            .as_ref()
            .map(|n| n.meta().parent.clone().unwrap_or(NodeId::Root));
        for d in &dirs {
            let listing = self.pins.listing(d).or_else(|| self.listings.get(d));
            if let Some(l) = listing {
                let mut l = l.write();
                l.remove_id(fileid);
                if let (Some(n), Some(nd)) = (&node, &new_dir) {
                    if nd == d {
                        l.insert_labelled(n);
                    }
                }
            }
            // The folder's change attribute moves (in memory: the app, not
            // the server, changed the catalog).
            let folder = if d.is_root() {
                Some(self.root.clone())
            } else {
                self.pins.node(d).or_else(|| self.nodes.get(d))
            };
            if let Some(f) = folder {
                f.update(|_| {});
                self.folder_floor.fetch_max(f.change(), Ordering::AcqRel);
            }
        }
        // Folders not in memory show a new change attribute when next
        // loaded: their listing may be what changed.
        self.folder_floor
            .fetch_max(now_ns().max(0) as u64, Ordering::AcqRel);
    }

    /// A node from its row, a folder's change attribute raised to the
    /// floor (see `folder_floor`).
    pub(super) fn node_from_row(&self, row: &rusqlite::Row<'_>) -> rusqlite::Result<Node> {
        let node = Node::from_row(row)?;
        if node.kind == NodeKind::Folder {
            node.raise_change(self.folder_floor.load(Ordering::Acquire));
        }
        Ok(node)
    }
}
