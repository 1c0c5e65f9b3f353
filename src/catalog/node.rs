//! Nodes as the server holds them in memory.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{RwLock, RwLockReadGuard};

use rusqlite::types::{Value, ValueRef};
use rusqlite::Row;

use super::names::{component_for_label, distinguish, NameRules};

/// A node's id as the catalog stores it: MarkBase uses text ids, older or
/// imported catalogs may use integers. `Root` is the export's virtual root,
/// the parent of every node whose `parent_id` is NULL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeId {
    Root,
    Int(i64),
    Text(Arc<str>),
}

impl NodeId {
    pub fn is_root(&self) -> bool {
        matches!(self, NodeId::Root)
    }

    /// An id of the server's own table of special nodes.
    pub fn is_special(&self) -> bool {
        matches!(self, NodeId::Text(s) if s.starts_with(SPECIAL_ID_PREFIX))
    }

    pub fn text(s: &str) -> NodeId {
        NodeId::Text(Arc::from(s))
    }

    pub(crate) fn from_sql(v: ValueRef<'_>) -> Option<NodeId> {
        match v {
            ValueRef::Null => None,
            ValueRef::Integer(i) => Some(NodeId::Int(i)),
            ValueRef::Text(b"") => None,
            ValueRef::Text(t) => Some(NodeId::text(&String::from_utf8_lossy(t))),
            ValueRef::Real(r) => Some(NodeId::Int(r as i64)),
            ValueRef::Blob(b) => Some(NodeId::text(&String::from_utf8_lossy(b))),
        }
    }

    /// A stable 64-bit number for this node: integer ids map to themselves,
    /// text ids to a hash with the top bit set (so the two never collide).
    pub fn fileid(&self) -> u64 {
        match self {
            NodeId::Root => ROOT_FILEID,
            NodeId::Int(i) if *i > 0 => *i as u64,
            NodeId::Int(i) => fnv1a(&i.to_be_bytes()) | (1 << 63),
            NodeId::Text(s) => fnv1a(s.as_bytes()) | (1 << 63),
        }
    }
}

/// fileid of the export root; chosen outside both id ranges' likely values.
pub const ROOT_FILEID: u64 = (1 << 63) | 1;

/// FNV-1a: a small, stable 64-bit hash (ids, reply-cache keys).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeId::Root => f.write_str("<root>"),
            NodeId::Int(i) => write!(f, "{i}"),
            NodeId::Text(s) => write!(f, "{s:?}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Folder,
    File,
    /// The kinds below live in the server's own table
    /// (`markbase_nfs_specials`), never in the app's `file_nodes`.
    Symlink,
    Fifo,
    Socket,
    BlockDevice,
    CharDevice,
}

impl NodeKind {
    /// Symlinks, FIFOs, sockets and devices: the server's own nodes.
    pub fn is_special(self) -> bool {
        !matches!(self, NodeKind::Folder | NodeKind::File)
    }

    /// The name a special kind has in `markbase_nfs_specials.kind`.
    pub fn special_name(self) -> Option<&'static str> {
        Some(match self {
            NodeKind::Symlink => "symlink",
            NodeKind::Fifo => "fifo",
            NodeKind::Socket => "socket",
            NodeKind::BlockDevice => "block",
            NodeKind::CharDevice => "char",
            NodeKind::Folder | NodeKind::File => return None,
        })
    }

    pub fn from_special_name(s: &str) -> Option<NodeKind> {
        Some(match s {
            "symlink" => NodeKind::Symlink,
            "fifo" => NodeKind::Fifo,
            "socket" => NodeKind::Socket,
            "block" => NodeKind::BlockDevice,
            "char" => NodeKind::CharDevice,
            _ => return None,
        })
    }

    pub fn from_catalog(s: &str) -> NodeKind {
        match s.to_ascii_lowercase().as_str() {
            "folder" | "directory" | "dir" => NodeKind::Folder,
            _ => NodeKind::File,
        }
    }

    /// `file_nodes.node_type` of a folder or file (specials have no row
    /// there; they answer their own table's name).
    pub fn as_catalog(self) -> &'static str {
        match self {
            NodeKind::Folder => "folder",
            NodeKind::File => "file",
            other => other.special_name().unwrap_or("file"),
        }
    }
}

/// Catalog timestamps are integers whose unit varies between writers:
/// seconds, milliseconds or microseconds. Pick by magnitude.
pub fn timestamp_to_ns(v: i64) -> i64 {
    TimeUnit::of(v).to_ns(v)
}

/// The unit of a catalog's integer timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl TimeUnit {
    pub fn of(v: i64) -> TimeUnit {
        let a = v.unsigned_abs();
        if a >= 100_000_000_000_000_000 {
            TimeUnit::Nanos
        } else if a >= 100_000_000_000_000 {
            TimeUnit::Micros
        } else if a >= 100_000_000_000 {
            TimeUnit::Millis
        } else {
            TimeUnit::Seconds
        }
    }

    pub fn to_ns(self, v: i64) -> i64 {
        match self {
            TimeUnit::Seconds => v.saturating_mul(1_000_000_000),
            TimeUnit::Millis => v.saturating_mul(1_000_000),
            TimeUnit::Micros => v.saturating_mul(1_000),
            TimeUnit::Nanos => v,
        }
    }

    pub fn ns_to_unit(self, ns: i64) -> i64 {
        match self {
            TimeUnit::Seconds => ns.div_euclid(1_000_000_000),
            TimeUnit::Millis => ns.div_euclid(1_000_000),
            TimeUnit::Micros => ns.div_euclid(1_000),
            TimeUnit::Nanos => ns,
        }
    }
}

fn int_of(v: ValueRef<'_>) -> i64 {
    match v {
        ValueRef::Integer(i) => i,
        ValueRef::Real(r) => r as i64,
        ValueRef::Text(t) => std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .map(|f| f as i64)
            .unwrap_or(0),
        _ => 0,
    }
}

/// The `path` member of `aliases_json`, if any.
pub fn content_path_of(aliases_json: &str) -> Option<PathBuf> {
    let v: serde_json::Value = serde_json::from_str(aliases_json).ok()?;
    let p = v.get("path")?.as_str()?;
    (!p.is_empty()).then(|| PathBuf::from(p))
}

/// Columns of a node's `file_nodes` row that the server changed and has
/// not yet written: the writer updates these and no others, so a batch
/// never writes back a stale value over what the MarkBase app committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Columns(u8);

impl Columns {
    /// parent_id and label (a rename or move).
    pub const PLACE: Columns = Columns(1);
    /// file_size.
    pub const SIZE: Columns = Columns(2);
    /// updated_at.
    pub const UPDATED: Columns = Columns(4);

    pub fn contains(self, c: Columns) -> bool {
        self.0 & c.0 == c.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The bits, as the journal keeps them.
    pub(crate) fn bits(self) -> u8 {
        self.0
    }

    pub(crate) fn from_bits(bits: u8) -> Columns {
        Columns(bits & 7)
    }
}

impl std::ops::BitOr for Columns {
    type Output = Columns;
    fn bitor(self, o: Columns) -> Columns {
        Columns(self.0 | o.0)
    }
}

impl std::ops::BitOrAssign for Columns {
    fn bitor_assign(&mut self, o: Columns) {
        self.0 |= o.0;
    }
}

/// What changes about a node (renames, writes, SETATTR); behind a lock so
/// every holder of the `Arc<Node>` sees one truth.
#[derive(Debug, Clone, Default)]
pub struct NodeMeta {
    /// `None` for top-level nodes (children of the export root).
    pub parent: Option<NodeId>,
    pub label: String,
    /// Where the file's bytes live (`aliases_json.path`); never moves.
    pub content: Option<PathBuf>,
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub modified_ns: i64,
    pub accessed_ns: i64,
    /// The NFS change attribute: strictly increasing across changes and
    /// restarts (kept in our side table, since a seconds mtime goes stale).
    pub change: u64,
    /// Set through SETATTR; `None` = the export's default.
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub owner_group: Option<String>,
    /// Creation time set through SETATTR (time_create), nanoseconds since
    /// the epoch; `None` = the row's `created_at`. Kept in our side table:
    /// the app's `created_at` stays the app's.
    pub created_ns: Option<i64>,
    /// The Mac's hidden flag (UF_HIDDEN, set through SETATTR); our table.
    pub hidden: bool,
    /// The verifier of an EXCLUSIVE4 create, so a retransmission succeeds.
    pub create_verifier: Option<[u8; 8]>,
    /// What a symlink points to or which device a device node is (fixed at
    /// creation); `None` for folders and files.
    pub special: Option<Special>,
    /// Removed from the namespace (its handle is now stale).
    pub deleted: bool,
    /// `file_nodes` columns changed here and not yet written.
    pub unsaved: Columns,
    /// Columns the writer has taken into a transaction not yet committed.
    pub writing: Columns,
    /// How many of the writer's batches hold this node's columns and are
    /// not yet in SQLite (`writing` is kept until the last is).
    pub writing_batches: u32,
}

/// What a special node is besides its kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Special {
    /// A symlink's target, as the client gave it (not interpreted).
    pub target: Vec<u8>,
    /// A device's major and minor numbers (specdata4).
    pub rdev: (u32, u32),
}

/// The prefix of the ids the server gives its special nodes: MarkBase's
/// own ids are UUIDs or integers, so these never name an app row, and a
/// special's id says which table holds it.
pub const SPECIAL_ID_PREFIX: &str = "nfs-special-";

/// One node as the server holds it in memory.
#[derive(Debug)]
pub struct Node {
    pub id: NodeId,
    pub fileid: u64,
    pub kind: NodeKind,
    /// Nanoseconds since the epoch.
    pub created_ns: i64,
    meta: RwLock<NodeMeta>,
    /// Bumped at every change; the background writer compares it to know
    /// whether what it persisted is still the latest.
    version: AtomicU64,
    /// Queued for the background writer and not yet taken into a batch:
    /// further data writes need not tell it again (see
    /// [`Node::queue_for_writer`]).
    queued: std::sync::atomic::AtomicBool,
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Node {
    pub fn new(id: NodeId, kind: NodeKind, created_ns: i64, meta: NodeMeta) -> Node {
        Node {
            fileid: id.fileid(),
            id,
            kind,
            created_ns,
            meta: RwLock::new(meta),
            version: AtomicU64::new(0),
            queued: Default::default(),
        }
    }

    /// Marks the node queued for the background writer; false when it
    /// already was (the writer has not taken it yet and will persist its
    /// latest state, so there is nothing to tell it). Saves a message and a
    /// wake-up of the writer thread per WRITE of a stream.
    pub fn queue_for_writer(&self) -> bool {
        !self.queued.swap(true, Ordering::AcqRel)
    }

    /// The writer takes the node into a batch: changes from here on queue
    /// it again. Called before the writer reads the node's state.
    pub fn taken_by_writer(&self) {
        // A swap, not a store: it synchronises with the writer's
        // `queue_for_writer` that found the node queued, so the version and
        // state read next include that write's change.
        self.queued.swap(false, Ordering::AcqRel);
    }

    pub fn root() -> Node {
        Node::new(
            NodeId::Root,
            NodeKind::Folder,
            0,
            NodeMeta {
                size: 4096,
                ..NodeMeta::default()
            },
        )
    }

    /// Decodes a row selected with `catalog::NODE_COLUMNS`.
    pub fn from_row(row: &Row<'_>) -> rusqlite::Result<Node> {
        let id = NodeId::from_sql(row.get_ref(0)?).unwrap_or(NodeId::Int(0));
        let parent = NodeId::from_sql(row.get_ref(1)?);
        let label: Option<String> = match row.get_ref(2)? {
            ValueRef::Null => None,
            ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Integer(i) => Some(i.to_string()),
            ValueRef::Real(r) => Some(r.to_string()),
        };
        let kind = match row.get::<_, Value>(3)? {
            Value::Text(t) => NodeKind::from_catalog(&t),
            _ => NodeKind::File,
        };
        let aliases: Option<String> = match row.get_ref(4)? {
            ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => None,
        };
        let content = match kind {
            NodeKind::File => aliases.as_deref().and_then(content_path_of),
            _ => None,
        };
        let size = match kind {
            NodeKind::File => int_of(row.get_ref(5)?).max(0) as u64,
            _ => 4096,
        };
        let created_ns = timestamp_to_ns(int_of(row.get_ref(6)?));
        let updated_ns = timestamp_to_ns(int_of(row.get_ref(7)?)).max(created_ns);
        // Our side table (LEFT JOINed: NULL when we never wrote the node).
        let side_change: Option<i64> = row.get(8)?;
        let mode: Option<i64> = row.get(9)?;
        let owner: Option<String> = row.get(10)?;
        let owner_group: Option<String> = row.get(11)?;
        let side_modified: Option<i64> = row.get(12)?;
        let create_verifier: Option<Vec<u8>> = row.get(13)?;
        let set_created: Option<i64> = row.get(14)?;
        let hidden: Option<i64> = row.get(15)?;
        // Another writer may have touched the row since we did: whichever
        // is newer wins, and change never goes backwards.
        let modified_ns = match side_modified {
            Some(m) if m >= updated_ns => m,
            _ => updated_ns,
        };
        let change = (side_change.unwrap_or(0).max(0) as u64).max(modified_ns.max(0) as u64);
        Ok(Node::new(
            id,
            kind,
            created_ns,
            NodeMeta {
                parent,
                label: label.unwrap_or_default(),
                content,
                size,
                modified_ns,
                accessed_ns: modified_ns,
                change,
                mode: mode.map(|m| m as u32),
                owner,
                owner_group,
                created_ns: set_created,
                hidden: hidden.unwrap_or(0) != 0,
                create_verifier: create_verifier.and_then(|v| v.try_into().ok()),
                special: None,
                deleted: false,
                unsaved: Columns::default(),
                writing: Columns::default(),
                writing_batches: 0,
            },
        ))
    }

    /// Decodes a row of our table of special nodes, selected with
    /// `catalog::SPECIAL_COLUMNS`; None for a kind this build does not know.
    pub fn from_special_row(row: &Row<'_>) -> rusqlite::Result<Option<Node>> {
        let id = NodeId::from_sql(row.get_ref(0)?).unwrap_or(NodeId::Int(0));
        let parent = NodeId::from_sql(row.get_ref(1)?);
        let label: String = row.get(2)?;
        let Some(kind) = NodeKind::from_special_name(&row.get::<_, String>(3)?) else {
            return Ok(None);
        };
        let target: Option<Vec<u8>> = row.get(4)?;
        let rdev = (row.get::<_, i64>(5)? as u32, row.get::<_, i64>(6)? as u32);
        let created_ns: i64 = row.get(7)?;
        let updated_ns: i64 = row.get(8)?;
        let side_change: Option<i64> = row.get(9)?;
        let target = target.unwrap_or_default();
        let modified_ns = row.get::<_, Option<i64>>(13)?.unwrap_or(updated_ns);
        Ok(Some(Node::new(
            id,
            kind,
            created_ns,
            NodeMeta {
                parent,
                label,
                content: None,
                size: if kind == NodeKind::Symlink {
                    target.len() as u64
                } else {
                    0
                },
                modified_ns,
                accessed_ns: modified_ns,
                change: (side_change.unwrap_or(0).max(0) as u64).max(modified_ns.max(0) as u64),
                mode: row.get::<_, Option<i64>>(10)?.map(|m| m as u32),
                owner: row.get(11)?,
                owner_group: row.get(12)?,
                created_ns: row.get(14)?,
                hidden: row.get::<_, Option<i64>>(15)?.unwrap_or(0) != 0,
                special: Some(Special { target, rdev }),
                ..NodeMeta::default()
            },
        )))
    }

    /// A consistent view of the changing fields.
    pub fn meta(&self) -> RwLockReadGuard<'_, NodeMeta> {
        self.meta.read()
    }

    /// Applies a change and advances `change` (monotonic, at least the
    /// current time in ns) and the version.
    pub fn update<R>(&self, f: impl FnOnce(&mut NodeMeta) -> R) -> R {
        let mut m = self.meta.write();
        let r = f(&mut m);
        self.bump(&mut m);
        r
    }

    /// As [`Node::update`], but the change attribute and version move only
    /// when `f` says it changed the node.
    pub fn update_if(&self, f: impl FnOnce(&mut NodeMeta) -> bool) -> bool {
        let mut m = self.meta.write();
        let changed = f(&mut m);
        if changed {
            self.bump(&mut m);
        }
        changed
    }

    /// Moves the change attribute (past the clock, never backwards) and the
    /// version of a node whose metadata `m` (held under its write lock)
    /// just changed.
    fn bump(&self, m: &mut NodeMeta) {
        m.change = (m.change + 1).max(now_ns().max(0) as u64);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Raises the change attribute to at least `floor` (a node being
    /// loaded: not a change of the node, so its version stays).
    pub fn raise_change(&self, floor: u64) {
        let mut m = self.meta.write();
        m.change = m.change.max(floor);
    }

    /// Takes what the MarkBase app committed to the node's row (`row`, the
    /// same node freshly read): place, label, size, times and content path
    /// move here; our own attributes (mode, owners, change) stay. The
    /// change attribute moves on, so clients revalidate.
    pub fn refresh_from(&self, row: &Node) {
        let fresh = row.meta().clone();
        self.update(|m| {
            // Columns the server changed and has not committed yet are
            // newer than the row: they stay (the writer writes them next).
            let ours = m.unsaved | m.writing;
            if !ours.contains(Columns::PLACE) {
                m.parent = fresh.parent;
                m.label = fresh.label;
            }
            if !ours.contains(Columns::SIZE) {
                m.size = fresh.size;
            }
            if !ours.contains(Columns::UPDATED) {
                m.modified_ns = fresh.modified_ns;
            }
            m.content = fresh.content;
        });
    }

    /// Whether the row (the same node freshly read) shows something the
    /// app changed: what [`Node::refresh_from`] would take differs.
    pub fn differs_from(&self, row: &Node) -> bool {
        let (m, r) = (self.meta(), row.meta());
        let ours = m.unsaved | m.writing;
        (!ours.contains(Columns::PLACE) && (m.parent != r.parent || m.label != r.label))
            || (!ours.contains(Columns::SIZE) && m.size != r.size)
            || (!ours.contains(Columns::UPDATED) && m.modified_ns != r.modified_ns)
            || m.content != r.content
    }

    /// The node's state for the writer, taking the columns to write: a
    /// change after this marks them again.
    pub fn take_for_writer(&self) -> (NodeMeta, Columns) {
        let mut m = self.meta.write();
        let cols = std::mem::take(&mut m.unsaved);
        m.writing |= cols;
        m.writing_batches += 1;
        (m.clone(), cols)
    }

    /// The writer's transaction committed (`ok`) or not: the columns it took
    /// are written, or unsaved again.
    pub fn writer_done(&self, cols: Columns, ok: bool) {
        let mut m = self.meta.write();
        m.writing_batches = m.writing_batches.saturating_sub(1);
        if m.writing_batches == 0 {
            m.writing = Columns::default();
        }
        if !ok {
            m.unsaved |= cols;
        }
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn change(&self) -> u64 {
        self.meta.read().change
    }

    pub fn size(&self) -> u64 {
        self.meta.read().size
    }
}

/// One name in a folder.
#[derive(Debug, Clone)]
pub struct ListingEntry {
    /// The name shown to clients (unique in the folder, no `/` or NUL).
    pub name: String,
    pub id: NodeId,
    pub kind: NodeKind,
}

/// A folder's children keyed by READDIR cookie. Cookies derive from the
/// child's fileid, so they stay valid while other entries come and go.
#[derive(Debug, Default)]
pub struct Listing {
    by_cookie: BTreeMap<u64, ListingEntry>,
    /// By the name's key under the folder's [`NameRules`]: a name is found
    /// whatever its normalisation (and case, where the export ignores case).
    by_key: HashMap<String, u64>,
    rules: NameRules,
    subfolders: u32,
}

/// Cookies 0, 1 and 2 are reserved by NFSv4 (0 = start of directory).
pub fn cookie_of(fileid: u64) -> u64 {
    fileid.wrapping_add(3).max(3)
}

impl Listing {
    /// An empty listing whose names compare under `rules`.
    pub fn new(rules: NameRules) -> Listing {
        Listing {
            rules,
            ..Listing::default()
        }
    }

    /// Builds the listing; where two children would show the same name
    /// (under `rules`: alike after normalisation, or case on a
    /// case-insensitive export), the one with the lower fileid keeps it and
    /// the others get ` (fileid)`.
    pub fn build(children: &[Arc<Node>], rules: NameRules) -> Listing {
        let mut nodes: Vec<&Arc<Node>> = children.iter().collect();
        nodes.sort_by_key(|n| n.fileid);
        let mut l = Listing::new(rules);
        for node in nodes {
            l.insert_labelled(node);
        }
        l
    }

    pub fn insert(&mut self, name: String, node: &Node) {
        let cookie = cookie_of(node.fileid);
        if node.kind == NodeKind::Folder {
            self.subfolders += 1;
        }
        self.by_key.insert(self.rules.key(&name), cookie);
        self.by_cookie.insert(
            cookie,
            ListingEntry {
                name,
                id: node.id.clone(),
                kind: node.kind,
            },
        );
    }

    /// Removes the entry `name` stands for (see [`Listing::get`]).
    pub fn remove(&mut self, name: &str) -> Option<ListingEntry> {
        let cookie = self.by_key.remove(&self.rules.key(name))?;
        let e = self.by_cookie.remove(&cookie)?;
        if e.kind == NodeKind::Folder {
            self.subfolders -= 1;
        }
        Some(e)
    }

    /// Removes the entry of the node with `fileid`, whatever its name.
    pub fn remove_id(&mut self, fileid: u64) -> Option<ListingEntry> {
        let cookie = cookie_of(fileid);
        let e = self.by_cookie.remove(&cookie)?;
        let key = self.rules.key(&e.name);
        if self.by_key.get(&key) == Some(&cookie) {
            self.by_key.remove(&key);
        }
        if e.kind == NodeKind::Folder {
            self.subfolders -= 1;
        }
        Some(e)
    }

    /// Adds `node` under the name its label gives, told apart with a
    /// suffix when another entry shows alike.
    pub fn insert_labelled(&mut self, node: &Node) {
        let label = node.meta().label.clone();
        let mut name = component_for_label(&label, node.fileid);
        if self.get(&name).is_some() {
            name = distinguish(&name, node.fileid);
        }
        self.insert(name, node);
    }

    /// The entry shown as `name`, or as a name that is the same under the
    /// folder's rules (another normalisation, or case).
    pub fn get(&self, name: &str) -> Option<&ListingEntry> {
        self.by_key
            .get(&self.rules.key(name))
            .and_then(|c| self.by_cookie.get(c))
    }

    pub fn len(&self) -> usize {
        self.by_cookie.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_cookie.is_empty()
    }

    pub fn subfolders(&self) -> u32 {
        self.subfolders
    }

    /// Entries after `cookie` (0 = from the start), with their cookies.
    pub fn after(&self, cookie: u64) -> impl Iterator<Item = (u64, &ListingEntry)> {
        self.by_cookie
            .range((
                std::ops::Bound::Excluded(cookie),
                std::ops::Bound::Unbounded,
            ))
            .map(|(c, e)| (*c, e))
    }

    pub fn entries(&self) -> impl Iterator<Item = &ListingEntry> {
        self.by_cookie.values()
    }
}
