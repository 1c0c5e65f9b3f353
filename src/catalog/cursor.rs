//! Walking a folder's listing without holding its lock between entries.
//! READDIR encodes each entry's attributes as it goes, and a child
//! folder's link count may load that child's listing under the namespace
//! lock. A create in the folder holds the namespace lock and then takes the
//! folder's listing to add its name: a walk that held the listing while it
//! waited for the namespace lock would wait for the create forever, and the
//! create for it. So the cursor copies a few entries under the lock, lets
//! it go, and hands them out.

use std::collections::VecDeque;

use super::node::ListingEntry;
use super::pins::SharedListing;

/// Entries copied per turn of the listing's lock.
const TURN: usize = 64;

/// The entries of a listing after a cookie, in cookie order, with their
/// cookies. Entries added or removed while it walks are seen or not
/// depending on whether the walk has passed them, as READDIR's cookies
/// allow.
pub struct ListingCursor {
    listing: SharedListing,
    /// The cookie of the last entry copied.
    after: u64,
    copied: VecDeque<(u64, ListingEntry)>,
}

impl ListingCursor {
    /// The entries of `listing` after `cookie` (0: from the start).
    pub fn new(listing: SharedListing, cookie: u64) -> ListingCursor {
        ListingCursor {
            listing,
            after: cookie,
            copied: VecDeque::new(),
        }
    }
}

impl Iterator for ListingCursor {
    type Item = (u64, ListingEntry);

    fn next(&mut self) -> Option<Self::Item> {
        // An empty turn is the end.
        if self.copied.is_empty() {
            let listing = self.listing.read();
            self.copied.extend(
                listing
                    .after(self.after)
                    .take(TURN)
                    .map(|(cookie, entry)| (cookie, entry.clone())),
            );
            if let Some((last, _)) = self.copied.back() {
                self.after = *last;
            }
        }
        self.copied.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::RwLock;

    use super::*;
    use crate::catalog::node::{cookie_of, Listing, Node, NodeId, NodeKind, NodeMeta};
    use crate::catalog::NameRules;

    fn file(n: i64) -> Node {
        Node::new(NodeId::Int(n), NodeKind::File, 0, NodeMeta::default())
    }

    #[test]
    fn walks_every_entry_over_several_turns_and_lets_the_lock_go_between() {
        let listing: SharedListing = Arc::new(RwLock::new(Listing::new(NameRules::default())));
        for n in 1..=150 {
            listing.write().insert(format!("f{n:03}"), &file(n));
        }
        let mut cursor = ListingCursor::new(listing.clone(), 0);
        let first: Vec<String> = cursor.by_ref().take(100).map(|(_, e)| e.name).collect();
        assert_eq!(first.len(), 100);
        assert_eq!(first[99], "f100");
        // Between entries the lock is free: a create, a remove.
        assert!(listing.try_write().is_some(), "held between entries");
        listing.write().insert("f151".into(), &file(151));
        listing.write().remove("f120");
        let rest: Vec<(u64, String)> = cursor.map(|(c, e)| (c, e.name)).collect();
        // Entries copied before the change are handed out as they were;
        // those after it as they are now (f120 was in the copied turn).
        assert_eq!(rest.len(), 51);
        assert_eq!(rest.last().unwrap(), &(cookie_of(151), "f151".to_string()));
        // Starting after a cookie.
        let from: Vec<u64> = ListingCursor::new(listing, cookie_of(149))
            .map(|(c, _)| c)
            .collect();
        assert_eq!(from, [cookie_of(150), cookie_of(151)]);
    }
}
