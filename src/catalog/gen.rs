//! `markbase-nfs gen`: a synthetic catalog shaped like the seed user's
//! (12,659 nodes, folders nested several levels deep, many small files and a
//! few multi-GiB sparse media files), for tests and benches.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{ensure, Context};
use indicatif::{ProgressBar, ProgressStyle};

use super::schema::{insert_node, now_secs, open_or_create};

#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Total nodes (folders + files).
    pub nodes: usize,
    /// Sizes of the sparse media files (each counts as one node).
    pub media_sizes: Vec<u64>,
    /// File nodes whose content file is deliberately absent.
    pub missing: usize,
    pub seed: u64,
    pub progress: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            nodes: 12_659,
            media_sizes: vec![1_610_612_736, 2_147_483_648, 5_368_709_120 + 12_345],
            missing: 0,
            seed: 2026,
            progress: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct GenSummary {
    pub folders: usize,
    pub files: usize,
    pub media: usize,
    pub max_depth: usize,
    pub bytes_written: u64,
}

/// splitmix64: small, seedable and good enough for shaping test data.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        super::ids::mix64(self.0)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn text_id(rng: &mut Rng) -> String {
    let a = rng.next();
    let b = rng.next();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

const FOLDER_WORDS: [&str; 12] = [
    "Project", "Reel", "Scene", "Shots", "Audio", "Graphics", "Exports", "Dailies", "VFX", "Color",
    "Proxies", "Archive",
];
const FILE_KINDS: [&str; 8] = [
    ".mov", ".wav", ".xml", ".txt", ".png", ".dpx", ".srt", ".json",
];

/// Writes a sparse media file of `size` bytes with random data in a few
/// regions (start, middle, across the 4 GiB mark when large enough, end), so
/// a checksum covers real offsets.
fn write_media(path: &Path, size: u64, rng: &mut Rng) -> anyhow::Result<u64> {
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size)
        .with_context(|| format!("sizing {} to {size}", path.display()))?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    let mut at = vec![0, size / 2, size.saturating_sub(chunk.len() as u64 + 7)];
    if size > (4 << 30) + (2 << 20) {
        at.push((4 << 30) - (512 << 10));
    }
    for off in at {
        rng.fill(&mut chunk);
        let n = chunk.len().min((size - off) as usize);
        f.write_all_at(&chunk[..n], off)
            .with_context(|| format!("writing {} at {off}", path.display()))?;
        written += n as u64;
    }
    Ok(written)
}

/// Builds a synthetic catalog at `db` with content under `storage`.
/// `db` must not exist yet.
pub fn generate(db: &Path, storage: &Path, opts: &GenOptions) -> anyhow::Result<GenSummary> {
    ensure!(
        !db.exists(),
        "{} already exists; gen writes a new catalog",
        db.display()
    );
    ensure!(
        opts.nodes > opts.media_sizes.len() + 8,
        "gen needs more than {} nodes",
        opts.media_sizes.len() + 8
    );
    std::fs::create_dir_all(storage)
        .with_context(|| format!("creating storage folder {}", storage.display()))?;
    let storage = storage.canonicalize()?;
    let mut conn = open_or_create(db)?;
    let tx = conn.transaction()?;
    let mut rng = Rng::new(opts.seed);
    let now = now_secs();
    let mut summary = GenSummary::default();
    let bar = if opts.progress {
        let b = ProgressBar::new(opts.nodes as u64);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} nodes {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };

    // About 8 % folders, as in the seed catalog; depth up to 7.
    let n_folders = (opts.nodes / 12).max(4);
    let mut folders: Vec<(String, usize)> = Vec::with_capacity(n_folders);
    for i in 0..n_folders {
        let id = text_id(&mut rng);
        let (parent, depth) = if i < 4 || folders.is_empty() {
            (None, 1)
        } else {
            // Prefer recent folders so chains grow deep.
            let span = folders.len().min(40) as u64;
            let pick = folders.len() - 1 - rng.below(span) as usize;
            let (pid, pdepth) = &folders[pick];
            if *pdepth >= 7 {
                (None, 1)
            } else {
                (Some(pid.clone()), pdepth + 1)
            }
        };
        let word = FOLDER_WORDS[i % FOLDER_WORDS.len()];
        let label = if i % 97 == 5 {
            format!("{word} {i} — Scène café")
        } else {
            format!("{word} {i:04}")
        };
        let t = now - 86_400 * 30 + i as i64;
        insert_node(&tx, &id, parent.as_deref(), &label, "folder", None, 0, t, t)?;
        summary.max_depth = summary.max_depth.max(depth);
        folders.push((id, depth));
        bar.inc(1);
    }
    summary.folders = n_folders;

    let media_folder = folders[0].0.clone();
    let mut buf = vec![0u8; 1 << 20];
    let n_files = opts.nodes - n_folders;
    for i in 0..n_files {
        let id = text_id(&mut rng);
        let media_index = i.checked_sub(n_files - opts.media_sizes.len());
        let (parent, label, size) = match media_index {
            Some(m) => (
                media_folder.clone(),
                format!("A{:03}_C{:03}_master.mov", m + 1, m + 7),
                opts.media_sizes[m],
            ),
            None => {
                let parent = folders[rng.below(folders.len() as u64) as usize].0.clone();
                let kind = FILE_KINDS[rng.below(FILE_KINDS.len() as u64) as usize];
                let roll = rng.below(100);
                let size = if roll < 80 {
                    rng.below(4096)
                } else if roll < 99 {
                    4096 + rng.below(60 << 10)
                } else {
                    (64 << 10) + rng.below(960 << 10)
                };
                let label = if i % 211 == 3 {
                    format!("._clip {i}{kind}")
                } else {
                    format!("clip_{i:05}{kind}")
                };
                (parent, label, size)
            }
        };
        let path = storage.join(format!("{}/{id}", &id[..2]));
        let missing = media_index.is_none() && i < opts.missing;
        if !missing {
            std::fs::create_dir_all(path.parent().unwrap_or(&storage))?;
            if media_index.is_some() {
                summary.bytes_written += write_media(&path, size, &mut rng)?;
                summary.media += 1;
            } else {
                let data = &mut buf[..size as usize];
                rng.fill(data);
                let mut f =
                    File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                f.write_all(data)
                    .with_context(|| format!("writing {}", path.display()))?;
                summary.bytes_written += size;
            }
        }
        let t = now - 86_400 + i as i64;
        insert_node(
            &tx,
            &id,
            Some(&parent),
            &label,
            "file",
            Some(&path),
            size,
            t,
            t,
        )?;
        summary.files += 1;
        bar.inc(1);
    }
    tx.commit().context("committing the generated catalog")?;
    bar.finish_and_clear();
    Ok(summary)
}
