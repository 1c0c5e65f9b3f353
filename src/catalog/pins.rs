//! What must stay in memory until the background writer has persisted it:
//! nodes with changes not yet committed, and folder listings with namespace
//! changes not yet committed. The caches may evict; pins may not, or a
//! reload from SQLite would bring back the old state.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::node::{Listing, Node, NodeId};

pub type SharedListing = Arc<RwLock<Listing>>;

#[derive(Default)]
pub(crate) struct Pins {
    nodes: Mutex<HashMap<NodeId, Arc<Node>>>,
    listings: Mutex<HashMap<NodeId, (SharedListing, usize)>>,
}

impl Pins {
    pub fn pin_node(&self, node: &Arc<Node>) {
        self.nodes
            .lock()
            .entry(node.id.clone())
            .or_insert_with(|| node.clone());
    }

    pub fn node(&self, id: &NodeId) -> Option<Arc<Node>> {
        self.nodes.lock().get(id).cloned()
    }

    /// Unpins `node` if what was persisted (`version`) is still its latest.
    pub fn unpin_node(&self, node: &Arc<Node>, version: u64) {
        let mut nodes = self.nodes.lock();
        if let Some(pinned) = nodes.get(&node.id) {
            // A removed node stays until its removal is in SQLite
            // (`unpin_deleted`), whatever batch wrote it before.
            if Arc::ptr_eq(pinned, node) && node.version() == version && !node.meta().deleted {
                nodes.remove(&node.id);
            }
        }
    }

    pub fn forget_node(&self, id: &NodeId) {
        self.nodes.lock().remove(id);
    }

    /// A removed node leaves memory once its removal is in SQLite (until
    /// then a load from SQLite would bring it back).
    pub fn unpin_deleted(&self, id: &NodeId) {
        let mut nodes = self.nodes.lock();
        if nodes.get(id).is_some_and(|n| n.meta().deleted) {
            nodes.remove(id);
        }
    }

    pub fn pin_listing(&self, dir: &NodeId, listing: &SharedListing) {
        self.listings
            .lock()
            .entry(dir.clone())
            .or_insert_with(|| (listing.clone(), 0))
            .1 += 1;
    }

    pub fn listing(&self, dir: &NodeId) -> Option<SharedListing> {
        self.listings.lock().get(dir).map(|(l, _)| l.clone())
    }

    pub fn release_listings(&self, dirs: &[NodeId]) {
        let mut l = self.listings.lock();
        for d in dirs {
            if let Some(e) = l.get_mut(d) {
                e.1 -= 1;
                if e.1 == 0 {
                    l.remove(d);
                }
            }
        }
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.nodes.lock().len(), self.listings.lock().len())
    }
}
