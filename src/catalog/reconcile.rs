//! Start-up reconciliation of the catalog with the disk: after a crash the
//! content files are the truth for sizes (COMMITted bytes are on disk even
//! if the batched size update was not). Nodes without content and content
//! without nodes are reported, never deleted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::node::{content_path_of, NodeId};
use super::{sql_err, Catalog, CatalogResult};

#[derive(Debug, Default, Clone)]
pub struct ReconcileReport {
    pub files_checked: u64,
    /// Nodes whose catalog size was corrected from the content file.
    pub sizes_fixed: Vec<(NodeId, u64, u64)>,
    /// File nodes whose content file is absent.
    pub missing: Vec<(NodeId, PathBuf)>,
    /// Files in the storage folder that no node points at.
    pub orphans: Vec<PathBuf>,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        match e.file_type() {
            // Hidden folders are the server's own (spare files), not content.
            Ok(t) if t.is_dir() && !e.file_name().to_string_lossy().starts_with('.') => {
                walk(&e.path(), out)
            }
            Ok(t) if t.is_file() => out.push(e.path()),
            _ => {}
        }
    }
}

/// Compares every file node with its content file and the storage folder
/// with the catalog; corrects sizes (through the writer) and reports the rest.
pub fn reconcile(catalog: &Catalog, storage: &Path) -> CatalogResult<ReconcileReport> {
    let rows: Vec<(NodeId, Option<String>, i64)> = {
        let conn = catalog.conn.lock();
        catalog.statements.fetch_add(1, Ordering::Relaxed);
        let mut st = conn
            .prepare(
                "SELECT node_id, aliases_json, file_size FROM file_nodes WHERE node_type = 'file'",
            )
            .map_err(sql_err("reconcile: list file nodes"))?;
        let rows = st
            .query_map([], |r| {
                let id = match r.get::<_, rusqlite::types::Value>(0)? {
                    rusqlite::types::Value::Integer(i) => NodeId::Int(i),
                    rusqlite::types::Value::Text(t) => NodeId::text(&t),
                    other => NodeId::text(&format!("{other:?}")),
                };
                Ok((id, r.get(1).ok(), r.get::<_, Option<i64>>(2)?.unwrap_or(0)))
            })
            .map_err(sql_err("reconcile: list file nodes"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err("reconcile: read file nodes"))?;
        rows
    };
    let mut report = ReconcileReport::default();
    let mut referenced = HashSet::new();
    for (id, aliases, size) in rows {
        report.files_checked += 1;
        let Some(path) = aliases.as_deref().and_then(content_path_of) else {
            continue;
        };
        match std::fs::metadata(&path) {
            Ok(meta) => {
                if meta.len() != size.max(0) as u64 {
                    if let Ok(node) = catalog.node(&id) {
                        catalog.data_written_exact(&node, meta.len());
                    }
                    report
                        .sizes_fixed
                        .push((id, size.max(0) as u64, meta.len()));
                }
            }
            Err(_) => report.missing.push((id, path.clone())),
        }
        referenced.insert(path.canonicalize().unwrap_or(path));
    }
    let mut files = Vec::new();
    walk(storage, &mut files);
    for f in files {
        let c = f.canonicalize().unwrap_or_else(|_| f.clone());
        if !referenced.contains(&c) {
            report.orphans.push(f);
        }
    }
    catalog.flush()?;
    for (id, from, to) in &report.sizes_fixed {
        tracing::warn!(node = %id, catalog_size = from, disk_size = to, "catalog size corrected from the content file");
    }
    for (id, path) in report.missing.iter().take(20) {
        tracing::warn!(node = %id, path = %path.display(), "content file missing");
    }
    for path in report.orphans.iter().take(20) {
        tracing::warn!(path = %path.display(), "content file with no catalog node (left in place)");
    }
    if report.missing.len() > 20 || report.orphans.len() > 20 {
        tracing::warn!(
            missing = report.missing.len(),
            orphans = report.orphans.len(),
            "more mismatches than shown"
        );
    }
    Ok(report)
}
