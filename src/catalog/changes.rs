//! Changes made through NFS: new node ids, create, remove, rename,
//! attributes and sizes, each answered once the journal (or SQLite) holds
//! it. Part of [`Catalog`].

use super::*;

impl Catalog {
    /// A fresh node id in the catalog's style (integer or UUID-like text).
    pub fn allocate_id(&self) -> NodeId {
        if self.shape.integer_ids {
            return NodeId::Int(self.next_int_id.fetch_sub(1, Ordering::Relaxed));
        }
        self.ids.text()
    }

    /// A fresh id for a special node (see [`node::SPECIAL_ID_PREFIX`]).
    pub fn allocate_special_id(&self) -> NodeId {
        self.ids.special()
    }

    /// Marks the folder changed (its change attribute moves on); returns
    /// (before, after) and the change to persist, if it has a row.
    pub(super) fn touch_dir(&self, dir: &Arc<Node>, now: i64) -> (DirChange, Option<Change>) {
        let before = dir.change();
        dir.update(|m| {
            m.modified_ns = now;
            m.unsaved |= Columns::UPDATED;
        });
        let after = dir.change();
        if dir.id.is_root() {
            return (DirChange { before, after }, None);
        }
        self.pins.pin_node(dir);
        (
            DirChange { before, after },
            Some(Change::Upsert(dir.clone())),
        )
    }

    /// Creates `new` in folder `dir`. If the name is taken, fails with
    /// `Exists` carrying the node that has it.
    pub fn create(
        &self,
        dir: &NodeId,
        new: NewNode,
    ) -> CatalogResult<(Arc<Node>, DirChange, Pending)> {
        let _ns = self.ns_lock.lock();
        let parent = self.node(dir)?;
        let listing = self.listing_locked(dir)?;
        if let Some(e) = listing.read().get(&new.name) {
            let existing = self.node(&e.id)?;
            return Err(CatalogError::Exists {
                dir: dir.clone(),
                name: new.name,
                existing,
            });
        }
        let now = now_ns();
        let node = Arc::new(Node::new(
            new.id.clone(),
            new.kind,
            now,
            NodeMeta {
                parent: (!dir.is_root()).then(|| dir.clone()),
                label: new.name.clone(),
                content: new.content,
                size: match (new.kind, &new.special) {
                    (NodeKind::Folder, _) => 4096,
                    (NodeKind::Symlink, Some(s)) => s.target.len() as u64,
                    _ => 0,
                },
                special: new.special,
                modified_ns: now,
                accessed_ns: now,
                change: now.max(0) as u64,
                mode: new.mode,
                owner: new.owner,
                owner_group: new.owner_group,
                create_verifier: new.create_verifier,
                ..NodeMeta::default()
            },
        ));
        self.pins.pin_node(&node);
        self.nodes.insert(node.id.clone(), node.clone());
        if node.kind == NodeKind::Folder {
            let empty = Arc::new(RwLock::new(Listing::new(self.names)));
            self.listings.insert(node.id.clone(), empty);
        }
        listing.write().insert(new.name, &node);
        self.pins.pin_listing(dir, &listing);
        let (cinfo, dir_change) = self.touch_dir(&parent, now);
        let mut changes = vec![Change::Upsert(node.clone())];
        changes.extend(dir_change);
        let pending = Pending(self.writer.submit(changes, vec![dir.clone()]));
        Ok((node, cinfo, pending))
    }

    /// Removes `name` from `dir` (a folder must be empty). The content file
    /// is the caller's to remove once nothing uses it.
    pub fn remove(
        &self,
        dir: &NodeId,
        name: &str,
    ) -> CatalogResult<(Arc<Node>, DirChange, Pending)> {
        let _ns = self.ns_lock.lock();
        let parent = self.node(dir)?;
        let listing = self.listing_locked(dir)?;
        let node = self.named(dir, &listing, name)?;
        let id = node.id.clone();
        if node.kind == NodeKind::Folder && !self.listing_locked(&id)?.read().is_empty() {
            return Err(CatalogError::NotEmpty(id));
        }
        listing.write().remove(name);
        self.pins.pin_listing(dir, &listing);
        self.forget(&node);
        let now = now_ns();
        let (cinfo, dir_change) = self.touch_dir(&parent, now);
        let mut changes = vec![Change::Delete(id)];
        changes.extend(dir_change);
        let pending = Pending(self.writer.submit(changes, vec![dir.clone()]));
        Ok((node, cinfo, pending))
    }

    /// The node `listing` (the folder `dir`'s) shows as `name`.
    fn named(&self, dir: &NodeId, listing: &SharedListing, name: &str) -> CatalogResult<Arc<Node>> {
        let id = listing
            .read()
            .get(name)
            .map(|e| e.id.clone())
            .ok_or_else(|| CatalogError::NotFound(dir.clone()))?;
        self.node(&id)
    }

    /// Drops a removed node from memory; its handle becomes stale, except
    /// to opens of it (see [`Catalog::removed`]).
    pub(super) fn forget(&self, node: &Arc<Node>) {
        node.update(|m| m.deleted = true);
        self.removed.insert(node.id.clone(), node.clone());
        // Pinned as removed until SQLite has the removal: the row is still
        // there until then, and must not be loaded back.
        self.pins.pin_node(node);
        self.nodes.invalidate(&node.id);
        self.listings.invalidate(&node.id);
    }

    /// Renames `from_dir/old` to `to_dir/new`, replacing an existing target
    /// of the same type (a folder only if empty), per RFC 7530 §16.26.
    pub fn rename(
        &self,
        from_dir: &NodeId,
        old: &str,
        to_dir: &NodeId,
        new: &str,
    ) -> CatalogResult<(Renamed, Pending)> {
        let _ns = self.ns_lock.lock();
        let src_parent = self.node(from_dir)?;
        let dst_parent = self.node(to_dir)?;
        let src_listing = self.listing_locked(from_dir)?;
        let dst_listing = self.listing_locked(to_dir)?;
        let node = self.named(from_dir, &src_listing, old)?;
        let id = node.id.clone();
        let (mut target_id, target_name) = dst_listing
            .read()
            .get(new)
            .map(|e| (Some(e.id.clone()), e.name.clone()))
            .unwrap_or_default();
        if target_id.as_ref() == Some(&id) && (from_dir != to_dir || target_name != new) {
            // The node itself under another spelling of its name (case, or
            // normalisation): a relabel, replacing nothing.
            target_id = None;
        }
        if target_id.as_ref() == Some(&id) {
            // Same object under the same name: nothing to do.
            let c = src_parent.change();
            let d = dst_parent.change();
            return Ok((
                Renamed {
                    source: DirChange {
                        before: c,
                        after: c,
                    },
                    target: DirChange {
                        before: d,
                        after: d,
                    },
                    replaced: None,
                },
                Pending(writer::Commit::done()),
            ));
        }
        if node.kind == NodeKind::Folder {
            // Not into itself or below itself.
            let mut cur = Some(dst_parent.clone());
            while let Some(c) = cur {
                if c.id == id {
                    return Err(CatalogError::IntoItself(id));
                }
                cur = if c.id.is_root() {
                    None
                } else {
                    Some(self.parent_of(&c)?)
                };
            }
        }
        let mut changes = Vec::new();
        let replaced = match target_id {
            Some(tid) => {
                let target = self.node(&tid)?;
                // A folder replaces only a folder, anything else only a
                // non-folder (RFC 7530 §16.26.4).
                if (target.kind == NodeKind::Folder) != (node.kind == NodeKind::Folder) {
                    return Err(CatalogError::TypeMismatch(tid));
                }
                if target.kind == NodeKind::Folder && !self.listing_locked(&tid)?.read().is_empty()
                {
                    return Err(CatalogError::NotEmpty(tid));
                }
                dst_listing.write().remove(new);
                self.forget(&target);
                changes.push(Change::Delete(tid));
                Some(target)
            }
            None => None,
        };
        src_listing.write().remove(old);
        dst_listing.write().insert(new.to_string(), &node);
        self.pins.pin_listing(from_dir, &src_listing);
        self.pins.pin_listing(to_dir, &dst_listing);
        node.update(|m| {
            m.parent = (!to_dir.is_root()).then(|| to_dir.clone());
            m.label = new.to_string();
            m.unsaved |= Columns::PLACE;
        });
        self.pins.pin_node(&node);
        changes.push(Change::Upsert(node));
        let now = now_ns();
        let (source, c1) = self.touch_dir(&src_parent, now);
        changes.extend(c1);
        let target = if from_dir == to_dir {
            source
        } else {
            let (t, c2) = self.touch_dir(&dst_parent, now);
            changes.extend(c2);
            t
        };
        let pending = Pending(
            self.writer
                .submit(changes, vec![from_dir.clone(), to_dir.clone()]),
        );
        Ok((
            Renamed {
                source,
                target,
                replaced,
            },
            pending,
        ))
    }

    /// Applies an attribute change (SETATTR) and queues it for group commit.
    pub fn set_attrs(&self, node: &Arc<Node>, f: impl FnOnce(&mut NodeMeta)) -> Pending {
        let changed = node.update_if(|m| {
            let before = SetAttrs::of(m);
            f(m);
            let after = SetAttrs::of(m);
            if after.size != before.size {
                m.unsaved |= Columns::SIZE;
            }
            if after.modified_ns != before.modified_ns {
                m.unsaved |= Columns::UPDATED;
            }
            after != before
        });
        // Setting what is already there (libnfs sets a new file's mode
        // again after creating it with that mode) changes nothing, so
        // there is nothing to make durable: no journal record, no flush.
        if !changed || node.id.is_root() {
            return Pending(writer::Commit::done());
        }
        self.pins.pin_node(node);
        Pending(
            self.writer
                .submit(vec![Change::Upsert(node.clone())], vec![]),
        )
    }

    /// Records bytes written up to `end` (size, mtime, change) in memory and
    /// marks the node dirty for the background writer. Runs no SQL.
    pub fn data_written(&self, node: &Arc<Node>, end: u64) {
        let now = now_ns();
        node.update(|m| {
            if end > m.size {
                m.size = end;
            }
            m.modified_ns = now;
            m.unsaved |= Columns::SIZE | Columns::UPDATED;
        });
        self.queue_for_writer(node);
    }

    /// Sets a file's size to exactly `size` (start-up reconciliation).
    pub(super) fn data_written_exact(&self, node: &Arc<Node>, size: u64) {
        node.update(|m| {
            m.size = size;
            m.unsaved |= Columns::SIZE;
        });
        self.queue_for_writer(node);
    }

    /// Pins a changed node in memory and hands it to the background writer,
    /// unless it is already waiting there (a stream's WRITEs then cost the
    /// writer thread one wake-up per batch, not one each). The pin stays
    /// until the writer has persisted the node's latest version.
    pub(super) fn queue_for_writer(&self, node: &Arc<Node>) {
        if node.queue_for_writer() {
            self.pins.pin_node(node);
            self.writer.dirty(node.clone());
        }
    }
}

/// The attributes SETATTR can change, to tell whether it changed any.
#[derive(PartialEq)]
struct SetAttrs {
    size: u64,
    modified_ns: i64,
    accessed_ns: i64,
    mode: Option<u32>,
    owner: Option<String>,
    owner_group: Option<String>,
    created_ns: Option<i64>,
    hidden: bool,
}

impl SetAttrs {
    fn of(m: &NodeMeta) -> SetAttrs {
        SetAttrs {
            size: m.size,
            modified_ns: m.modified_ns,
            accessed_ns: m.accessed_ns,
            mode: m.mode,
            owner: m.owner.clone(),
            owner_group: m.owner_group.clone(),
            created_ns: m.created_ns,
            hidden: m.hidden,
        }
    }
}
