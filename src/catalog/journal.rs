//! The catalog's intent journal: namespace changes made durable with one
//! write of a small file (`O_DIRECT | O_DSYNC` on Linux, else a write and
//! `fdatasync`; see `durable_append.rs`), so a reply waits for one flush of the disk
//! instead of a SQLite commit (several page writes, the WAL growing, and its
//! own sync).
//!
//! The file sits beside the catalog (`<db>.markbase-nfs.journal`) and is
//! written once with zeros at its full size, so a record overwrites blocks
//! the file already has and its flush carries data only, no file-system
//! metadata. Each group commit appends one record: a header (magic, length,
//! sequence number, checksum) and the batch's changes. The catalog writer
//! answers the batch's submitters once the record is on disk, and SQLite
//! catches up in the background; every SQLite transaction that applies
//! records also stores the newest sequence number it applied
//! (`markbase_nfs_journal.applied_seq`), so a record is applied exactly
//! once. When SQLite has made everything up to the newest record durable,
//! the next record goes to the start of the file again.
//!
//! The file is two regions. When the one being written is full, the
//! writer asks SQLite to make its records durable (a synced commit, and
//! the new content files' folders synced: ~40 ms) and goes on in the other
//! region, whose records SQLite was asked for when it filled. With one
//! region, every namespace change waited for that synced commit each time
//! the journal filled (every few thousand creates).
//!
//! At start-up, before anything reads the catalog, the records after the
//! applied number are read (the sequence must run on by one, and each
//! record's checksum must hold: a torn last record was never answered) and
//! applied in one synced transaction.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::durable_append::{write_all_at, DurableAppend};
use super::node::{fnv1a, Columns, Node, NodeId, NodeKind, NodeMeta, Special};

/// One region of the journal. A record that does not fit after the tail
/// goes to the start of the other region, once SQLite holds that region's
/// records durably.
pub(crate) const REGION_BYTES: u64 = 4 << 20;

/// The journal's size on disk (written with zeros when created): two
/// regions.
pub(crate) const JOURNAL_BYTES: u64 = 2 * REGION_BYTES;

const MAGIC: u32 = 0x4d42_4a31; // "MBJ1"
const HEADER: usize = 4 + 4 + 8 + 8;
/// A record longer than this is not one the server wrote.
const MAX_RECORD: u32 = 1 << 30;

/// The journal file of the catalog at `db`.
pub(crate) fn path_for(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".markbase-nfs.journal");
    PathBuf::from(p)
}

/// A node id as the journal keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub(crate) enum IdImage {
    Int(i64),
    Text(String),
}

impl IdImage {
    /// None for the export root (it has no row).
    pub fn of(id: &NodeId) -> Option<IdImage> {
        match id {
            NodeId::Root => None,
            NodeId::Int(i) => Some(IdImage::Int(*i)),
            NodeId::Text(s) => Some(IdImage::Text(s.to_string())),
        }
    }

    pub fn id(&self) -> NodeId {
        match self {
            IdImage::Int(i) => NodeId::Int(*i),
            IdImage::Text(s) => NodeId::text(s),
        }
    }
}

/// What the writer persists of a node: its state when the batch took it,
/// and which `file_nodes` columns the server changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NodeImage {
    pub id: IdImage,
    /// `NodeKind::as_catalog` (folder, file, symlink, fifo, …).
    pub kind: String,
    /// The node's creation (the row's `created_at`).
    pub born_ns: i64,
    pub parent: Option<IdImage>,
    pub label: String,
    pub content: Option<PathBuf>,
    pub size: u64,
    pub modified_ns: i64,
    pub change: u64,
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub owner_group: Option<String>,
    /// Creation time set through SETATTR (our side table).
    pub created_ns: Option<i64>,
    pub hidden: bool,
    pub create_verifier: Option<[u8; 8]>,
    pub target: Option<Vec<u8>>,
    pub rdev: (u32, u32),
    pub deleted: bool,
    /// The `file_nodes` columns to write (`Columns` bits).
    pub columns: u8,
    /// A namespace change: the row is inserted if it is missing. A data
    /// update only updates a row that exists (the app may have deleted it).
    pub insert: bool,
}

impl NodeImage {
    /// Takes the node's unsaved columns for the writer (they are the
    /// batch's from now on) and its state.
    pub fn take(node: &Node, insert: bool) -> (NodeImage, Columns) {
        let (m, cols) = node.take_for_writer();
        (NodeImage::of(node, &m, cols, insert), cols)
    }

    fn of(node: &Node, m: &NodeMeta, cols: Columns, insert: bool) -> NodeImage {
        let special = m.special.clone().unwrap_or_default();
        NodeImage {
            id: IdImage::of(&node.id).unwrap_or(IdImage::Int(0)),
            kind: node.kind.as_catalog().to_string(),
            born_ns: node.created_ns,
            parent: m.parent.as_ref().and_then(IdImage::of),
            label: m.label.clone(),
            content: m.content.clone(),
            size: m.size,
            modified_ns: m.modified_ns,
            change: m.change,
            mode: m.mode,
            owner: m.owner.clone(),
            owner_group: m.owner_group.clone(),
            created_ns: m.created_ns,
            hidden: m.hidden,
            create_verifier: m.create_verifier,
            target: m.special.as_ref().map(|_| special.target.clone()),
            rdev: special.rdev,
            deleted: m.deleted,
            columns: cols.bits(),
            insert,
        }
    }

    pub fn kind(&self) -> NodeKind {
        NodeKind::from_special_name(&self.kind)
            .unwrap_or_else(|| NodeKind::from_catalog(&self.kind))
    }

    pub fn columns(&self) -> Columns {
        Columns::from_bits(self.columns)
    }

    pub fn special(&self) -> Special {
        Special {
            target: self.target.clone().unwrap_or_default(),
            rdev: self.rdev,
        }
    }
}

#[cfg(test)]
impl NodeImage {
    /// A file's image as a create journals it, for tests to adjust.
    pub fn of_file(
        id: IdImage,
        parent: Option<IdImage>,
        label: &str,
        columns: Columns,
    ) -> NodeImage {
        NodeImage {
            id,
            kind: "file".into(),
            born_ns: 1_000_000_000,
            parent,
            label: label.into(),
            content: None,
            size: 0,
            modified_ns: 2_000_000_000,
            change: 0,
            mode: None,
            owner: None,
            owner_group: None,
            created_ns: None,
            hidden: false,
            create_verifier: None,
            target: None,
            rdev: (0, 0),
            deleted: false,
            columns: columns.bits(),
            insert: true,
        }
    }
}

/// One change as journaled and applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Entry {
    Upsert(Box<NodeImage>),
    Delete(IdImage),
    ClientUp(Vec<u8>),
    ClientDown(Vec<u8>),
}

/// A record read back at start-up.
#[derive(Debug)]
pub(crate) struct Record {
    pub seq: u64,
    pub entries: Vec<Entry>,
}

/// The open journal, written by the catalog writer's thread only.
pub(crate) struct Journal {
    file: File,
    /// How records reach the disk (direct writes where possible).
    out: DurableAppend,
    path: PathBuf,
    /// The region being written (0 or 1).
    region: usize,
    /// Where the next record goes, from the region's start.
    tail: u64,
    /// The newest record's sequence number (or the applied one at open).
    pub last_seq: u64,
    /// The newest record in each region since the file was last all
    /// durable (0: none). A region may be written over once SQLite holds
    /// its newest record durably.
    newest_in: [u64; 2],
}

impl Journal {
    /// Opens (creating and zero-filling if needed) the journal; the next
    /// record gets `applied_seq + 1` and goes to offset 0 (everything in
    /// the file is applied and durable by the time the writer opens it).
    pub fn open(path: &Path, applied_seq: u64) -> io::Result<Journal> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() < JOURNAL_BYTES {
            zero_fill(&file, JOURNAL_BYTES)?;
            file.sync_all()?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(Journal {
            out: DurableAppend::open(path),
            file,
            path: path.to_path_buf(),
            region: 0,
            tail: 0,
            last_seq: applied_seq,
            newest_in: [0; 2],
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a record of `len` payload bytes fits after the tail.
    pub fn fits(&self, len: usize) -> bool {
        self.tail + (HEADER + len) as u64 <= REGION_BYTES
    }

    /// Whether a record of `len` payload bytes fits in an empty region.
    pub fn fits_a_region(len: usize) -> bool {
        (HEADER + len) as u64 <= REGION_BYTES
    }

    /// Bytes used since the last rewind.
    pub fn used(&self) -> u64 {
        self.region as u64 * REGION_BYTES + self.tail
    }

    /// The newest record in the region not being written: SQLite must hold
    /// it durably before [`Journal::switch_region`].
    pub fn other_region_newest(&self) -> u64 {
        self.newest_in[1 - self.region]
    }

    /// Goes on at the start of the other region.
    pub fn switch_region(&mut self) {
        self.region = 1 - self.region;
        self.tail = 0;
        self.out.restart();
    }

    /// Starts writing at offset 0 again: only once every record written
    /// so far is durable in SQLite.
    pub fn rewind(&mut self) {
        self.region = 0;
        self.tail = 0;
        self.newest_in = [0; 2];
        self.out.restart();
    }

    /// Appends one record (its payload from [`encode`]) and makes it
    /// durable. Returns its number. A record larger than a region is
    /// written only after a rewind, and reaches into region 1 (or, from
    /// region 1, past the file's end).
    pub fn append(&mut self, payload: &[u8]) -> io::Result<u64> {
        let seq = self.last_seq + 1;
        let mut rec = Vec::with_capacity(HEADER + payload.len());
        rec.extend_from_slice(&MAGIC.to_le_bytes());
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&seq.to_le_bytes());
        rec.extend_from_slice(&checksum(seq, payload).to_le_bytes());
        rec.extend_from_slice(payload);
        let at = self.region as u64 * REGION_BYTES + self.tail;
        // The blocks were written at creation, so only data goes to the
        // disk, no file-system metadata.
        self.out.write(&self.file, &rec, at)?;
        self.tail += rec.len() as u64;
        self.last_seq = seq;
        self.newest_in[self.region] = seq;
        if self.region == 0 && self.tail > REGION_BYTES {
            self.newest_in[1] = seq;
        }
        Ok(seq)
    }
}

/// A record's payload: the changes it holds.
pub(crate) fn encode(entries: &[Entry]) -> io::Result<Vec<u8>> {
    serde_json::to_vec(entries).map_err(io::Error::other)
}

/// Reads the records numbered after `applied_seq`, in order, stopping at
/// the first that is missing, torn or out of sequence.
pub(crate) fn read_after(path: &Path, applied_seq: u64) -> io::Result<Vec<Record>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // Each region holds one run of records from its start (what follows a
    // run is older, or torn); together, ordered by number, they run on from
    // the applied one. A journal of one region (written before there were
    // two) is read as region 0.
    let region = REGION_BYTES as usize;
    let mut found = read_run(&data, 0, region, applied_seq);
    if data.len() > region {
        found.extend(read_run(&data, region, usize::MAX, applied_seq));
    }
    found.sort_by_key(|r| r.seq);
    let mut out: Vec<Record> = Vec::with_capacity(found.len());
    for r in found {
        if r.seq != applied_seq + 1 + out.len() as u64 {
            break;
        }
        out.push(r);
    }
    Ok(out)
}

/// The records numbered after `applied_seq` in the run starting at
/// `start`, each starting before `starts_before`.
fn read_run(data: &[u8], start: usize, starts_before: usize, applied_seq: u64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut at = start;
    let mut prev: Option<u64> = None;
    while at + HEADER <= data.len() && at < starts_before {
        let h = &data[at..at + HEADER];
        let magic = u32::from_le_bytes(h[0..4].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(h[4..8].try_into().unwrap_or_default());
        let seq = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
        let sum = u64::from_le_bytes(h[16..24].try_into().unwrap_or_default());
        if magic != MAGIC || len > MAX_RECORD || at + HEADER + len as usize > data.len() {
            break;
        }
        if prev.is_some_and(|p| seq != p + 1) {
            break;
        }
        let payload = &data[at + HEADER..at + HEADER + len as usize];
        if checksum(seq, payload) != sum {
            break;
        }
        let entries: Vec<Entry> = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(_) => break,
        };
        if seq > applied_seq {
            out.push(Record { seq, entries });
        }
        prev = Some(seq);
        at += HEADER + len as usize;
    }
    out
}

fn checksum(seq: u64, payload: &[u8]) -> u64 {
    fnv1a(payload) ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn zero_fill(file: &File, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let n = zeros.len().min((len - at) as usize);
        write_all_at(file, &zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload of about `bytes` bytes, told apart by `tag`.
    fn payload(tag: u8, bytes: usize) -> Vec<u8> {
        // JSON writes each byte of 100..=199 as four characters ("123,").
        encode(&[Entry::ClientUp(vec![100 + tag; bytes / 4])]).unwrap()
    }

    fn tags(records: &[Record]) -> Vec<(u64, u8)> {
        records
            .iter()
            .map(|r| match &r.entries[..] {
                [Entry::ClientUp(id)] => (r.seq, id[0] - 100),
                other => panic!("unexpected entries {other:?}"),
            })
            .collect()
    }

    #[test]
    fn records_in_both_regions_are_read_in_order_and_older_ones_never() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite.markbase-nfs.journal");
        let mut j = Journal::open(&path, 0).unwrap();
        let big = (REGION_BYTES / 4) as usize;
        // Region 0 takes three records of a quarter region; a fourth does
        // not fit after their headers and goes to region 1.
        for tag in 1..=3 {
            assert!(j.fits(payload(tag, big).len()));
            j.append(&payload(tag, big)).unwrap();
        }
        assert!(!j.fits(payload(4, big).len()));
        assert_eq!(j.other_region_newest(), 0, "region 1 holds nothing yet");
        j.switch_region();
        j.append(&payload(4, big)).unwrap();
        j.append(&payload(5, 1000)).unwrap();
        assert_eq!(j.other_region_newest(), 3, "region 0 holds up to 3");
        let all = read_after(&path, 0).unwrap();
        assert_eq!(tags(&all), [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]);

        // SQLite holds 1–3 durably: region 0 is written over from its start.
        assert!(!j.fits(big * 3));
        j.switch_region();
        j.append(&payload(6, big)).unwrap();
        // Region 0 now reads 6, then the older 2 and 3 (never read again).
        assert_eq!(
            tags(&read_after(&path, 3).unwrap()),
            [(4, 4), (5, 5), (6, 6)]
        );
        assert_eq!(tags(&read_after(&path, 5).unwrap()), [(6, 6)]);
        assert!(read_after(&path, 6).unwrap().is_empty());

        // A torn newest record ends the run; what came before it stays.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 10] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(tags(&read_after(&path, 3).unwrap()), [(4, 4), (5, 5)]);
    }

    /// On Linux (ext4, and tmpfs since 6.6) records go out as direct
    /// writes; records of many sizes, across a region switch and a rewind,
    /// read back as written.
    #[cfg(target_os = "linux")]
    #[test]
    fn direct_writes_read_back_across_regions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite.markbase-nfs.journal");
        let mut j = Journal::open(&path, 0).unwrap();
        assert!(j.out.is_direct(), "this file system took no O_DIRECT");
        let sizes = [10, 5000, 4096 - HEADER, 4, 70_000, 300];
        let mut tag = 0u8;
        let mut append = |j: &mut Journal, bytes: usize| {
            tag += 1;
            j.append(&payload(tag, bytes)).unwrap();
        };
        for &n in &sizes {
            append(&mut j, n);
        }
        j.switch_region();
        for &n in &sizes {
            append(&mut j, n);
        }
        let all = read_after(&path, 0).unwrap();
        let expected: Vec<(u64, u8)> = (1..=12).map(|t| (t as u64, t)).collect();
        assert_eq!(tags(&all), expected);
        // Everything durable in SQLite: the file starts over at offset 0.
        j.rewind();
        append(&mut j, 20);
        assert_eq!(tags(&read_after(&path, 12).unwrap()), [(13, 13)]);
    }

    #[test]
    fn a_journal_of_one_region_is_still_read() {
        // Journals written before there were two regions are 4 MiB, one
        // run from the start.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.journal");
        let mut data = Vec::new();
        for seq in 1..=2u64 {
            let p = payload(seq as u8, 100);
            data.extend_from_slice(&MAGIC.to_le_bytes());
            data.extend_from_slice(&(p.len() as u32).to_le_bytes());
            data.extend_from_slice(&seq.to_le_bytes());
            data.extend_from_slice(&checksum(seq, &p).to_le_bytes());
            data.extend_from_slice(&p);
        }
        data.resize(REGION_BYTES as usize, 0);
        std::fs::write(&path, &data).unwrap();
        assert_eq!(tags(&read_after(&path, 1).unwrap()), [(2, 2)]);
        // Opened, it grows to two regions.
        drop(Journal::open(&path, 2).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), JOURNAL_BYTES);
    }
}
