//! Folds repeated writes of one node within a SQLite transaction into one.
//!
//! A create under load writes its folder's row once per create (the
//! folder's modification time) and the new file's row twice (the create,
//! then the SETATTR of its mode that Finder, `cp` and libnfs send next);
//! gathered into one transaction, most of those rows are written over by
//! the next image of the same node. Each write is an UPDATE or INSERT of
//! `file_nodes` (with the change-feed trigger's row) and of our side table.
//!
//! A later image of a node is folded into the node's earlier write when it
//! leaves the node where that write put it (same folder and name, not a
//! rename): the earlier write then carries the later image (the node's
//! newer state), and the union of both writes' columns. The write stays at
//! the earlier position, so a folder's row is still written before rows
//! that name it as their parent, and a name is still taken in the order the
//! server took it (a unique index on names in the app's schema sees no
//! state the server never had). A delete of the node ends folding into
//! what came before it.

use std::borrow::Cow;
use std::collections::HashMap;

use super::super::journal::{Entry, IdImage, NodeImage};
use super::super::node::Columns;

/// The entries to apply, in order, with repeated writes folded.
pub(super) fn coalesce<'a>(entries: impl Iterator<Item = &'a Entry>) -> Vec<Cow<'a, Entry>> {
    let mut out: Vec<Cow<'a, Entry>> = Vec::new();
    // Each node's latest write in `out` that a later image may fold into.
    let mut written: HashMap<&'a IdImage, usize> = HashMap::new();
    for e in entries {
        match e {
            Entry::Upsert(later) => {
                let at = written.get(&later.id).copied();
                match at.and_then(|at| Some((at, folded(&out[at], later)?))) {
                    Some((at, both)) => out[at] = Cow::Owned(both),
                    None => {
                        written.insert(&later.id, out.len());
                        out.push(Cow::Borrowed(e));
                    }
                }
            }
            Entry::Delete(id) => {
                written.remove(id);
                out.push(Cow::Borrowed(e));
            }
            _ => out.push(Cow::Borrowed(e)),
        }
    }
    out
}

/// `earlier` carrying `later`'s state with the columns and insertion of
/// both, when `later` may be written in its place (it leaves the node where
/// `earlier` put it).
fn folded(earlier: &Entry, later: &NodeImage) -> Option<Entry> {
    let Entry::Upsert(earlier) = earlier else {
        return None;
    };
    let same_place = !later.columns().contains(Columns::PLACE)
        && later.parent == earlier.parent
        && later.label == earlier.label
        && later.deleted == earlier.deleted
        && later.kind == earlier.kind;
    same_place.then(|| {
        Entry::Upsert(Box::new(NodeImage {
            columns: (earlier.columns() | later.columns()).bits(),
            insert: earlier.insert || later.insert,
            ..later.clone()
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: i64, parent: i64, label: &str, columns: Columns, insert: bool) -> Entry {
        let parent = Some(IdImage::Int(parent));
        Entry::Upsert(Box::new(NodeImage {
            insert,
            ..NodeImage::of_file(IdImage::Int(id), parent, label, columns)
        }))
    }

    fn with(mut e: Entry, f: impl FnOnce(&mut NodeImage)) -> Entry {
        if let Entry::Upsert(img) = &mut e {
            f(img);
        }
        e
    }

    /// (id, label, columns, insert, change, mode) of each write.
    fn writes(out: &[Cow<'_, Entry>]) -> Vec<(i64, String, u8, bool, u64, Option<u32>)> {
        out.iter()
            .map(|e| match &**e {
                Entry::Upsert(i) => {
                    let IdImage::Int(id) = i.id else { panic!() };
                    (id, i.label.clone(), i.columns, i.insert, i.change, i.mode)
                }
                Entry::Delete(IdImage::Int(id)) => (*id, "<deleted>".into(), 0, false, 0, None),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn creates_in_one_folder_write_the_folder_and_each_file_once() {
        let (place, updated) = (Columns::PLACE, Columns::UPDATED);
        let folder = |change| with(image(1, 0, "Reel", updated, false), |i| i.change = change);
        let entries = [
            image(10, 1, "A001.mov", place | Columns::SIZE, true),
            folder(1),
            // The SETATTR of the new file's mode: our side table only.
            with(image(10, 1, "A001.mov", Columns::default(), true), |i| {
                i.mode = Some(0o644);
                i.change = 2;
            }),
            image(11, 1, "A002.mov", place | Columns::SIZE, true),
            folder(2),
            folder(3),
        ];
        let out = coalesce(entries.iter());
        assert_eq!(
            writes(&out),
            [
                (
                    10,
                    "A001.mov".into(),
                    (place | Columns::SIZE).bits(),
                    true,
                    2,
                    Some(0o644)
                ),
                (1, "Reel".into(), updated.bits(), false, 3, None),
                (
                    11,
                    "A002.mov".into(),
                    (place | Columns::SIZE).bits(),
                    true,
                    0,
                    None
                ),
            ],
            "each node once, at its first write, with its newest state"
        );
    }

    #[test]
    fn a_rename_or_a_delete_is_never_folded_over() {
        let entries = [
            image(10, 1, "a.mov", Columns::PLACE, true),
            image(10, 1, "b.mov", Columns::PLACE, false),
            image(10, 1, "b.mov", Columns::SIZE, false),
            Entry::Delete(IdImage::Int(10)),
            image(10, 1, "b.mov", Columns::UPDATED, false),
        ];
        let out = coalesce(entries.iter());
        assert_eq!(
            writes(&out),
            [
                (10, "a.mov".into(), Columns::PLACE.bits(), true, 0, None),
                // The size folds into the rename, which named the same place.
                (
                    10,
                    "b.mov".into(),
                    (Columns::PLACE | Columns::SIZE).bits(),
                    false,
                    0,
                    None
                ),
                (10, "<deleted>".into(), 0, false, 0, None),
                (10, "b.mov".into(), Columns::UPDATED.bits(), false, 0, None),
            ]
        );
    }
}
