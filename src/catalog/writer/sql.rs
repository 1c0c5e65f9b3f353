//! SQL of the writer: journal replay at start-up (what the journal holds
//! beyond what SQLite applied), and how a change becomes rows of
//! `file_nodes` and the side table. Part of the writer.

use super::*;

/// The newest journal record applied to the catalog at `conn`.
pub(super) fn applied_seq(conn: &Connection) -> rusqlite::Result<u64> {
    let v: Option<i64> = conn
        .query_row(
            "SELECT applied_seq FROM markbase_nfs_journal WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

/// Applies the journal's records that SQLite lacks (after a crash) in one
/// synced transaction; returns how many records and changes. Content files
/// of replayed file creations that a crash lost are created again, empty
/// (as the create left them).
pub(crate) fn replay_journal(db: &Path, shape: CatalogShape) -> anyhow::Result<(usize, usize)> {
    use anyhow::Context;
    let jpath = journal::path_for(db);
    let mut conn = Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let applied = applied_seq(&conn)?;
    let records = journal::read_after(&jpath, applied)
        .with_context(|| format!("reading the intent journal {}", jpath.display()))?;
    let Some(last) = records.last().map(|r| r.seq) else {
        return Ok((0, 0));
    };
    let mut changes = 0;
    for rec in &records {
        for e in &rec.entries {
            if let Entry::Upsert(img) = e {
                restore_content(img);
            }
        }
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let feed_mark = crate::catalog::feed::newest(&tx).ok();
    for rec in &records {
        for e in &rec.entries {
            apply_entry(&tx, &shape, e)?;
            changes += 1;
        }
    }
    set_applied(&tx, last)?;
    if let Some(mark) = feed_mark {
        tx.prepare_cached("DELETE FROM markbase_nfs_changes WHERE seq > ?1")?
            .execute([mark])?;
    }
    tx.commit()
        .with_context(|| format!("replaying the intent journal into {}", db.display()))?;
    Ok((records.len(), changes))
}

/// A replayed file creation whose content file a crash lost (its folder
/// entry had not reached the disk) gets it back, empty.
pub(super) fn restore_content(img: &NodeImage) {
    if !img.insert || img.kind() != NodeKind::File || img.deleted {
        return;
    }
    let Some(path) = &img.content else { return };
    if path.exists() {
        return;
    }
    let made = path
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .and_then(|_| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
        })
        .and_then(|f| f.sync_all());
    match made {
        Ok(()) => {
            tracing::warn!(path = %path.display(), "journal replay: the content file of a created file was lost in a crash; created it again, empty")
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "journal replay: cannot create a lost content file again")
        }
    }
}

pub(super) fn set_applied(tx: &Connection, seq: u64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO markbase_nfs_journal (id, applied_seq) VALUES (1, ?1)
         ON CONFLICT(id) DO UPDATE SET applied_seq = excluded.applied_seq",
    )?
    .execute([seq as i64])?;
    Ok(())
}

/// Applies one change to SQLite; returns the statements run.
pub(super) fn apply_entry(
    tx: &Connection,
    shape: &CatalogShape,
    e: &Entry,
) -> rusqlite::Result<u64> {
    Ok(match e {
        Entry::Upsert(img) => write_node(tx, shape, img)?,
        Entry::Delete(id) => {
            let v = id.id().to_sql();
            tx.prepare_cached("DELETE FROM file_nodes WHERE node_id = ?1")?
                .execute([&v])?;
            tx.prepare_cached("DELETE FROM markbase_nfs_attrs WHERE node_id = ?1")?
                .execute([&v])?;
            if id.id().is_special() {
                tx.prepare_cached("DELETE FROM markbase_nfs_specials WHERE node_id = ?1")?
                    .execute([&v])?;
                3
            } else {
                2
            }
        }
        Entry::ClientUp(id) => {
            tx.prepare_cached(
                "INSERT INTO markbase_nfs_clients (client_id, confirmed_ns) VALUES (?1, ?2)
                 ON CONFLICT(client_id) DO UPDATE SET confirmed_ns = excluded.confirmed_ns",
            )?
            .execute(params![id, crate::catalog::node::now_ns()])?;
            1
        }
        Entry::ClientDown(id) => {
            tx.prepare_cached("DELETE FROM markbase_nfs_clients WHERE client_id = ?1")?
                .execute([id])?;
            1
        }
    })
}

/// Writes what the server changed of a node: the `file_nodes` columns it
/// marked unsaved and no others (the MarkBase app edits the same rows), the
/// whole row only for a node new to the table (`insert`), and our side
/// table. Returns the statements run.
pub(super) fn write_node(
    tx: &Connection,
    shape: &CatalogShape,
    m: &NodeImage,
) -> rusqlite::Result<u64> {
    if m.deleted {
        return Ok(0);
    }
    let kind = m.kind();
    if kind.is_special() {
        return write_special(tx, m);
    }
    let cols = m.columns();
    let unit: TimeUnit = shape.time_unit;
    let id = m.id.id().to_sql();
    let parent = m
        .parent
        .as_ref()
        .map(|p| p.id().to_sql())
        .unwrap_or(Value::Null);
    let updated = unit.ns_to_unit(m.modified_ns);
    let size = match kind {
        NodeKind::File => m.size as i64,
        _ => 0,
    };
    let mut statements = 0;
    let mut row_exists = None;
    if !cols.is_empty() {
        let mut sets = Vec::new();
        let mut values: Vec<Value> = vec![id.clone()];
        let mut set = |column: &str, v: Value| {
            values.push(v);
            sets.push(format!("{column} = ?{}", values.len()));
        };
        if cols.contains(Columns::PLACE) {
            set("parent_id", parent.clone());
            set("label", Value::Text(m.label.clone()));
        }
        if cols.contains(Columns::SIZE) {
            set("file_size", Value::Integer(size));
        }
        if cols.contains(Columns::UPDATED) {
            set("updated_at", Value::Integer(updated));
        }
        let sql = format!(
            "UPDATE file_nodes SET {} WHERE node_id = ?1",
            sets.join(", ")
        );
        let changed = tx
            .prepare_cached(&sql)?
            .execute(rusqlite::params_from_iter(values))?;
        statements += 1;
        row_exists = Some(changed > 0);
    }
    // Whether the node has a row (known from the UPDATE, else asked).
    let exists = match row_exists {
        Some(e) => e,
        None => {
            statements += 1;
            tx.prepare_cached("SELECT 1 FROM file_nodes WHERE node_id = ?1")?
                .exists([&id])?
        }
    };
    if !m.insert && !exists {
        // A data update of a node the MarkBase app deleted: no row, no
        // side-table row either (an orphan would dress a later node that
        // reuses the id).
        return Ok(statements);
    }
    if m.insert && !exists {
        let aliases = match &m.content {
            Some(p) => serde_json::json!({ "path": p.to_string_lossy() }).to_string(),
            None => "{}".to_string(),
        };
        tx.prepare_cached(
            "INSERT INTO file_nodes (node_id, parent_id, label, node_type, aliases_json, file_size, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            id,
            parent,
            m.label,
            kind.as_catalog(),
            aliases,
            size,
            unit.ns_to_unit(m.born_ns),
            updated
        ])?;
        statements += 1;
    }
    write_side_row(tx, &id, m)?;
    Ok(statements + 1)
}

/// Writes a special node (symlink, FIFO, socket, device): its row in our
/// table (`insert`: created or moved; otherwise only if it still has one)
/// and its side row.
pub(super) fn write_special(tx: &Connection, m: &NodeImage) -> rusqlite::Result<u64> {
    let id = m.id.id().to_sql();
    if !m.insert {
        let exists = tx
            .prepare_cached("SELECT 1 FROM markbase_nfs_specials WHERE node_id = ?1")?
            .exists([&id])?;
        if !exists {
            return Ok(1);
        }
    }
    let parent = m
        .parent
        .as_ref()
        .map(|p| p.id().to_sql())
        .unwrap_or(Value::Null);
    let special = m.special();
    tx.prepare_cached(
        "INSERT INTO markbase_nfs_specials (node_id, parent_id, label, kind, target, rdev_major, rdev_minor, created_ns, updated_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(node_id) DO UPDATE SET parent_id = excluded.parent_id, label = excluded.label,
           updated_ns = excluded.updated_ns",
    )?
    .execute(params![
        id,
        parent,
        m.label,
        m.kind().as_catalog(),
        special.target,
        special.rdev.0 as i64,
        special.rdev.1 as i64,
        m.born_ns,
        m.modified_ns
    ])?;
    write_side_row(tx, &id, m)?;
    Ok(3)
}

/// Our side-table row of a node: what `file_nodes` has no column for.
pub(super) fn write_side_row(tx: &Connection, id: &Value, m: &NodeImage) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO markbase_nfs_attrs (node_id, change, mode, owner, owner_group, modified_ns, create_verifier, created_ns, hidden)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(node_id) DO UPDATE SET change = excluded.change, mode = excluded.mode,
           owner = excluded.owner, owner_group = excluded.owner_group,
           modified_ns = excluded.modified_ns, create_verifier = excluded.create_verifier,
           created_ns = excluded.created_ns, hidden = excluded.hidden",
    )?
    .execute(params![
        id,
        m.change as i64,
        m.mode.map(|v| v as i64),
        m.owner,
        m.owner_group,
        m.modified_ns,
        m.create_verifier.map(|v| v.to_vec()),
        m.created_ns,
        m.hidden as i64
    ])?;
    Ok(())
}
