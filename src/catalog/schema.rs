//! The `file_nodes` schema: created when absent, checked when present.
//! Columns and tables of an existing MarkBase database are left as they are.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rusqlite::{params, Connection};

const REQUIRED_COLUMNS: [&str; 8] = [
    "node_id",
    "parent_id",
    "label",
    "node_type",
    "aliases_json",
    "file_size",
    "created_at",
    "updated_at",
];

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS file_nodes (
    node_id      TEXT PRIMARY KEY,
    parent_id    TEXT,
    label        TEXT NOT NULL,
    node_type    TEXT NOT NULL,
    aliases_json TEXT NOT NULL DEFAULT '{}',
    file_size    INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
)";

/// Child lookups (`WHERE parent_id = ?`) need this index; creating it on an
/// existing database adds an index and changes no data.
const CREATE_PARENT_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS file_nodes_parent_id ON file_nodes(parent_id)";

/// Our own per-node attributes that `file_nodes` has no column for (the
/// monotonic change counter, mode, owner, ns mtime, exclusive-create
/// verifier). A table of ours, so MarkBase's own table is never altered.
/// `node_id` has no declared type so it matches text and integer ids alike.
const CREATE_SIDE_TABLE: &str = "CREATE TABLE IF NOT EXISTS markbase_nfs_attrs (
    node_id         PRIMARY KEY,
    change          INTEGER NOT NULL,
    mode            INTEGER,
    owner           TEXT,
    owner_group     TEXT,
    modified_ns     INTEGER,
    create_verifier BLOB,
    created_ns      INTEGER,
    hidden          INTEGER
)";

/// Columns added to `markbase_nfs_attrs` after it was first shipped:
/// added to an older table at open (ALTER TABLE … ADD COLUMN keeps rows).
const SIDE_TABLE_LATER_COLUMNS: [(&str, &str); 2] =
    [("created_ns", "INTEGER"), ("hidden", "INTEGER")];

/// NFSv4 clients holding state, so that after a restart they (and only
/// they) may reclaim during the grace period (RFC 7530 §9.6.3).
const CREATE_CLIENTS_TABLE: &str = "CREATE TABLE IF NOT EXISTS markbase_nfs_clients (
    client_id    BLOB PRIMARY KEY,
    confirmed_ns INTEGER NOT NULL
)";

/// Symlinks, FIFOs, sockets and device nodes clients create: the server's
/// own nodes, kept apart so the app's `file_nodes` holds the folders and
/// files it knows and nothing else. Their mode, owner and change attribute
/// are in `markbase_nfs_attrs` like every node's. `parent_id` has no
/// declared type so it matches text and integer ids alike (NULL: top
/// level).
const CREATE_SPECIALS_TABLE: &str = "CREATE TABLE IF NOT EXISTS markbase_nfs_specials (
    node_id    TEXT PRIMARY KEY,
    parent_id,
    label      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    target     BLOB,
    rdev_major INTEGER NOT NULL DEFAULT 0,
    rdev_minor INTEGER NOT NULL DEFAULT 0,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL
)";

const CREATE_SPECIALS_PARENT_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS markbase_nfs_specials_parent ON markbase_nfs_specials(parent_id)";

/// The boot instances of earlier runs (the first four bytes of every
/// stateid they issued), so a stateid of an earlier run is told apart from
/// one never issued: STALE_STATEID against BAD_STATEID (RFC 7530 §9.1.4).
const CREATE_BOOTS_TABLE: &str = "CREATE TABLE IF NOT EXISTS markbase_nfs_boots (
    boot       INTEGER PRIMARY KEY,
    started_ns INTEGER NOT NULL
)";

/// The newest record of the server's intent journal that SQLite holds
/// (`journal.rs`): start-up replays only the records after it.
const CREATE_JOURNAL_TABLE: &str = "CREATE TABLE IF NOT EXISTS markbase_nfs_journal (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    applied_seq INTEGER NOT NULL
)";

/// What kind of ids and timestamps an existing catalog uses, so rows we add
/// look like the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogShape {
    /// `node_id` is declared INTEGER: new nodes get max + 1.
    pub integer_ids: bool,
    pub time_unit: super::node::TimeUnit,
}

pub fn shape_of(conn: &Connection) -> rusqlite::Result<CatalogShape> {
    let decl: String = conn
        .query_row(
            "SELECT type FROM pragma_table_info('file_nodes') WHERE name = 'node_id'",
            [],
            |r| r.get(0),
        )
        .unwrap_or_default();
    let newest: Option<i64> =
        conn.query_row("SELECT MAX(updated_at) FROM file_nodes", [], |r| r.get(0))?;
    Ok(CatalogShape {
        integer_ids: decl.to_ascii_uppercase().contains("INT"),
        time_unit: newest.map_or(super::node::TimeUnit::Seconds, super::node::TimeUnit::of),
    })
}

/// Opens the catalog at `path`, creating the file and schema if absent.
pub fn open_or_create(path: &Path) -> anyhow::Result<Connection> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating folder {}", dir.display()))?;
        }
    }
    let fresh = !path.exists();
    let conn =
        Connection::open(path).with_context(|| format!("opening catalog {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    if fresh {
        conn.pragma_update(None, "journal_mode", "WAL")
            .context("setting WAL journal mode")?;
    }
    let has_table: bool = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'file_nodes'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if has_table {
        let mut st = conn.prepare("SELECT name FROM pragma_table_info('file_nodes')")?;
        let cols: Vec<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let missing: Vec<&str> = REQUIRED_COLUMNS
            .iter()
            .copied()
            .filter(|c| !cols.iter().any(|have| have.eq_ignore_ascii_case(c)))
            .collect();
        if !missing.is_empty() {
            bail!(
                "catalog {}: table file_nodes lacks column(s) {}",
                path.display(),
                missing.join(", ")
            );
        }
    } else {
        conn.execute(CREATE_TABLE, [])
            .with_context(|| format!("creating file_nodes in {}", path.display()))?;
    }
    conn.execute(CREATE_PARENT_INDEX, [])
        .with_context(|| format!("creating the parent_id index in {}", path.display()))?;
    conn.execute(CREATE_SIDE_TABLE, [])
        .with_context(|| format!("creating markbase_nfs_attrs in {}", path.display()))?;
    add_missing_columns(&conn, "markbase_nfs_attrs", &SIDE_TABLE_LATER_COLUMNS)
        .with_context(|| format!("upgrading markbase_nfs_attrs in {}", path.display()))?;
    conn.execute(CREATE_CLIENTS_TABLE, [])
        .with_context(|| format!("creating markbase_nfs_clients in {}", path.display()))?;
    conn.execute(CREATE_BOOTS_TABLE, [])
        .with_context(|| format!("creating markbase_nfs_boots in {}", path.display()))?;
    conn.execute(CREATE_SPECIALS_TABLE, [])
        .with_context(|| format!("creating markbase_nfs_specials in {}", path.display()))?;
    conn.execute(CREATE_SPECIALS_PARENT_INDEX, [])
        .with_context(|| format!("indexing markbase_nfs_specials in {}", path.display()))?;
    conn.execute(CREATE_JOURNAL_TABLE, [])
        .with_context(|| format!("creating markbase_nfs_journal in {}", path.display()))?;
    Ok(conn)
}

/// Adds those of `columns` that `table` (one of ours) lacks.
fn add_missing_columns(
    conn: &Connection,
    table: &str,
    columns: &[(&str, &str)],
) -> rusqlite::Result<()> {
    let mut st = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
    let have: Vec<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for (name, decl) in columns {
        if !have.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            conn.execute(&format!("ALTER TABLE {table} ADD COLUMN {name} {decl}"), [])?;
        }
    }
    Ok(())
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Inserts one node row.
#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_node(
    conn: &Connection,
    id: &str,
    parent: Option<&str>,
    label: &str,
    kind: &str,
    content: Option<&Path>,
    size: u64,
    created: i64,
    updated: i64,
) -> rusqlite::Result<()> {
    let aliases = match content {
        Some(p) => serde_json::json!({ "path": p.to_string_lossy() }).to_string(),
        None => "{}".to_string(),
    };
    conn.prepare_cached(
        "INSERT INTO file_nodes (node_id, parent_id, label, node_type, aliases_json, file_size, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![id, parent, label, kind, aliases, size as i64, created, updated])?;
    Ok(())
}

/// Creates `db` with a small demo tree (and its content files under
/// `storage`) when `db` does not exist. Returns whether it created it.
pub fn create_demo(db: &Path, storage: &Path) -> anyhow::Result<bool> {
    if db.exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(storage)
        .with_context(|| format!("creating storage folder {}", storage.display()))?;
    let storage = storage
        .canonicalize()
        .with_context(|| format!("resolving {}", storage.display()))?;
    let mut conn = open_or_create(db)?;
    let tx = conn.transaction()?;
    let t = now_secs();
    let folders = [
        ("demo-projects", None, "Projects"),
        ("demo-film", Some("demo-projects"), "Demo Film"),
        ("demo-footage", Some("demo-film"), "Footage"),
        ("demo-renders", Some("demo-film"), "Renders"),
        ("demo-library", None, "Library"),
    ];
    for (id, parent, label) in folders {
        insert_node(&tx, id, parent, label, "folder", None, 0, t, t)?;
    }
    let mut files: Vec<(&str, &str, &str, Vec<u8>)> = vec![(
        "demo-readme",
        "demo-projects",
        "README.txt",
        b"This volume is a MarkBase catalog served over NFSv4.0 by markbase-nfs.\n".to_vec(),
    )];
    let clip: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    files.push(("demo-clip", "demo-footage", "A001_C001.mov", clip));
    files.push((
        "demo-notes",
        "demo-library",
        "Notes café.txt",
        "Scène 1 — prise 3\n".as_bytes().to_vec(),
    ));
    for (id, parent, label, data) in files {
        let path = storage.join(format!("{id}.bin"));
        let mut f = std::fs::File::create(&path)
            .with_context(|| format!("creating demo file {}", path.display()))?;
        f.write_all(&data)?;
        insert_node(
            &tx,
            id,
            Some(parent),
            label,
            "file",
            Some(&path),
            data.len() as u64,
            t,
            t,
        )?;
    }
    tx.commit()?;
    Ok(true)
}
