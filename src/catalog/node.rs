//! Nodes as the server holds them in memory.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::types::{Value, ValueRef};
use rusqlite::Row;

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

    pub fn text(s: &str) -> NodeId {
        NodeId::Text(Arc::from(s))
    }

    fn from_sql(v: ValueRef<'_>) -> Option<NodeId> {
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

fn fnv1a(data: &[u8]) -> u64 {
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
}

impl NodeKind {
    pub fn from_catalog(s: &str) -> NodeKind {
        match s.to_ascii_lowercase().as_str() {
            "folder" | "directory" | "dir" => NodeKind::Folder,
            _ => NodeKind::File,
        }
    }

    pub fn as_catalog(self) -> &'static str {
        match self {
            NodeKind::Folder => "folder",
            NodeKind::File => "file",
        }
    }
}

/// One catalog row, decoded.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: NodeId,
    pub fileid: u64,
    /// `None` for top-level nodes (children of the export root).
    pub parent: Option<NodeId>,
    pub label: String,
    pub kind: NodeKind,
    /// Where the file's bytes live (`aliases_json.path`).
    pub content: Option<PathBuf>,
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub created_ns: i64,
    pub modified_ns: i64,
}

/// Catalog timestamps are integers whose unit varies between writers:
/// seconds, milliseconds or microseconds. Pick by magnitude.
pub fn timestamp_to_ns(v: i64) -> i64 {
    let a = v.unsigned_abs();
    if a >= 100_000_000_000_000_000 {
        v
    } else if a >= 100_000_000_000_000 {
        v.saturating_mul(1_000)
    } else if a >= 100_000_000_000 {
        v.saturating_mul(1_000_000)
    } else {
        v.saturating_mul(1_000_000_000)
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

impl Node {
    pub fn root() -> Node {
        Node {
            id: NodeId::Root,
            fileid: ROOT_FILEID,
            parent: None,
            label: String::new(),
            kind: NodeKind::Folder,
            content: None,
            size: 4096,
            created_ns: 0,
            modified_ns: 0,
        }
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
            NodeKind::Folder => None,
        };
        let size = match kind {
            NodeKind::File => int_of(row.get_ref(5)?).max(0) as u64,
            NodeKind::Folder => 4096,
        };
        let created_ns = timestamp_to_ns(int_of(row.get_ref(6)?));
        let modified_ns = timestamp_to_ns(int_of(row.get_ref(7)?)).max(created_ns);
        Ok(Node {
            fileid: id.fileid(),
            label: label.unwrap_or_default(),
            id,
            parent,
            kind,
            content,
            size,
            created_ns,
            modified_ns,
        })
    }

    /// The NFS change attribute: monotonic in the node's modification time
    /// at nanosecond resolution (a seconds mtime would go stale).
    pub fn change(&self) -> u64 {
        self.modified_ns.max(0) as u64
    }
}

/// One name in a folder.
#[derive(Debug, Clone)]
pub struct ListingEntry {
    /// The name shown to clients (unique in the folder, no `/` or NUL).
    pub name: String,
    /// READDIR cookie: derived from the node, so it stays valid while other
    /// entries come and go.
    pub cookie: u64,
    pub node: Arc<Node>,
}

/// A folder's children, sorted by cookie.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<ListingEntry>,
    by_name: HashMap<String, usize>,
    pub subfolders: u32,
}

/// Cookies 0, 1 and 2 are reserved by NFSv4 (0 = start of directory).
pub fn cookie_of(fileid: u64) -> u64 {
    fileid.wrapping_add(3).max(3)
}

/// Makes a catalog label usable as one NFS path component: `/` becomes `:`
/// (what Finder shows as `/`), NUL is dropped, and empty, `.` and `..`
/// get a visible stand-in.
pub fn component_for_label(label: &str, fileid: u64) -> String {
    let cleaned: String = label
        .chars()
        .filter(|c| *c != '\0')
        .map(|c| if c == '/' { ':' } else { c })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => format!("{cleaned}_{fileid:x}"),
        _ => cleaned,
    }
}

impl Listing {
    /// Builds the listing; where two children would show the same name, the
    /// one with the lower fileid keeps it and the others get ` (id)` added.
    pub fn build(children: Vec<Arc<Node>>) -> Listing {
        let mut nodes = children;
        nodes.sort_by_key(|n| n.fileid);
        let mut by_name = HashMap::with_capacity(nodes.len());
        let mut entries = Vec::with_capacity(nodes.len());
        let mut subfolders = 0;
        for node in nodes {
            let mut name = component_for_label(&node.label, node.fileid);
            if by_name.contains_key(&name) {
                name = format!("{name} ({:x})", node.fileid);
            }
            if node.kind == NodeKind::Folder {
                subfolders += 1;
            }
            by_name.insert(name.clone(), entries.len());
            entries.push(ListingEntry {
                name,
                cookie: cookie_of(node.fileid),
                node,
            });
        }
        // Cookies are monotonic in fileid except at the wrap-around; keep
        // the list sorted by cookie so resuming is a binary search.
        entries.sort_by_key(|e| e.cookie);
        for (i, e) in entries.iter().enumerate() {
            by_name.insert(e.name.clone(), i);
        }
        Listing {
            entries,
            by_name,
            subfolders,
        }
    }

    pub fn get(&self, name: &str) -> Option<&ListingEntry> {
        self.by_name.get(name).map(|i| &self.entries[*i])
    }

    /// Index of the first entry after `cookie` (0 = from the start).
    pub fn resume_after(&self, cookie: u64) -> usize {
        if cookie == 0 {
            return 0;
        }
        self.entries.partition_point(|e| e.cookie <= cookie)
    }
}
