//! `markbase-nfs import DIR --db FILE`: indexes an existing folder. Folders
//! become folder nodes, files become file nodes whose `aliases_json.path` is
//! the real file; nothing on disk is moved or copied.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::schema::{insert_node, open_or_create};

#[derive(Debug, Clone, Default)]
pub struct ImportSummary {
    pub folders: u64,
    pub files: u64,
    pub bytes: u64,
    /// Entries that are neither files nor folders (symlinks, sockets…).
    pub skipped: u64,
}

fn mtime_secs(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Imports the tree under `root` (not `root` itself) as top-level nodes.
pub fn import_tree(root: &Path, db: &Path, progress: bool) -> anyhow::Result<ImportSummary> {
    let root = root
        .canonicalize()
        .with_context(|| format!("resolving import folder {}", root.display()))?;
    anyhow::ensure!(root.is_dir(), "{} is not a folder", root.display());
    let mut conn = open_or_create(db)?;
    let tx = conn.transaction()?;
    let bar = if progress {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} {pos} nodes indexed {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut summary = ImportSummary::default();
    // Ids are "import:<path relative to root>" so importing twice conflicts
    // loudly instead of duplicating the tree.
    let mut stack: Vec<(PathBuf, Option<String>)> = vec![(root.clone(), None)];
    while let Some((dir, parent_id)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading folder {}", dir.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading folder {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path)
                .with_context(|| format!("stat {}", path.display()))?;
            let rel = path.strip_prefix(&root).unwrap_or(&path);
            let id = format!("import:{}", rel.to_string_lossy());
            let label = entry.file_name().to_string_lossy().into_owned();
            let t = mtime_secs(&meta);
            if meta.is_dir() {
                insert_node(
                    &tx,
                    &id,
                    parent_id.as_deref(),
                    &label,
                    "folder",
                    None,
                    0,
                    t,
                    t,
                )
                .with_context(|| format!("indexing folder {}", path.display()))?;
                summary.folders += 1;
                stack.push((path, Some(id)));
            } else if meta.is_file() {
                insert_node(
                    &tx,
                    &id,
                    parent_id.as_deref(),
                    &label,
                    "file",
                    Some(&path),
                    meta.len(),
                    t,
                    t,
                )
                .with_context(|| format!("indexing file {}", path.display()))?;
                summary.files += 1;
                summary.bytes += meta.len();
            } else {
                summary.skipped += 1;
                continue;
            }
            bar.inc(1);
        }
    }
    tx.commit().context("committing the import")?;
    bar.finish_and_clear();
    Ok(summary)
}
