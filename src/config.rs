//! `tuning.toml` → typed settings. Every knob has a default, so an empty or
//! missing file is a valid configuration.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    /// The export: an `[export]` table serves one catalog (at `path`, `/`
    /// by default); `[[export]]` tables serve several under an NFSv4
    /// pseudo-root, each at its own `path`.
    #[serde(with = "export_tables")]
    pub export: ExportTables,
    pub network: NetworkConfig,
    pub nfs: NfsConfig,
    pub cache: CacheConfig,
    pub storage: StorageConfig,
    pub catalog: CatalogConfig,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where the Prometheus text endpoint listens (`GET /metrics`), as
    /// address:port; empty: no endpoint.
    pub address: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// How long dirty nodes (sizes, mtimes after WRITEs) may wait before
    /// the background writer persists them, in milliseconds.
    pub writer_interval_ms: u64,
    /// Most dirty nodes or namespace changes in one transaction.
    pub writer_max_batch: usize,
    /// How often the change feed looks for the MarkBase app's commits
    /// (`PRAGMA data_version`, one cheap query), in milliseconds.
    pub feed_poll_ms: u64,
    /// How the server learns of the app's commits: `triggers` (ours on
    /// `file_nodes`, feeding our own table; the default) or `scan` (no
    /// change to the app's schema: folders and nodes the server holds are
    /// re-read, a bounded share per poll; slower to notice).
    pub feed: crate::catalog::FeedMode,
    /// Namespace changes are made durable by the intent journal beside the
    /// catalog (one `fdatasync` per group commit; SQLite catches up in the
    /// background, start-up replays). `false`: each group commit is a synced
    /// SQLite commit before the reply (several flushes; slower).
    pub journal: bool,
    /// How long SQLite's catch-up waits to gather journaled changes into
    /// one transaction, in milliseconds (the app sees them this much later;
    /// nothing answered waits for it).
    pub journal_gather_ms: u64,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            writer_interval_ms: 200,
            writer_max_batch: 4096,
            feed_poll_ms: 50,
            feed: crate::catalog::FeedMode::Triggers,
            journal: true,
            journal_gather_ms: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. The production set-up is loopback only.
    pub address: String,
    pub port: u16,
    /// A second port serving the same programs, for NFSv3 clients that
    /// want MOUNT on a port of its own (0: none; MOUNT is on `port` too).
    pub mount_port: u16,
    /// Threads that run blocking work (disk I/O, SQLite misses).
    pub blocking_threads: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// Where clients mount the export: `/` (the only export), or `/name`
    /// (one of several, listed in the NFSv4 pseudo-root).
    pub path: String,
    /// The catalog database (`data/users/<user>.sqlite`).
    pub db: PathBuf,
    /// Where files created through NFS get their content.
    /// Empty = `<db without .sqlite>.storage` beside the database.
    pub storage: PathBuf,
    /// Numeric export id carried in every file handle.
    pub export_id: u32,
    /// Owner reported for nodes no SETATTR gave one: "caller" (the asking
    /// client's AUTH_SYS uid, so an editor's Mac sees its files as its
    /// user's), or a fixed "uid" / "user@domain".
    pub owner: String,
    /// Likewise for the group ("caller" = the caller's AUTH_SYS gid).
    pub owner_group: String,
    /// Permission bits (masked to 0o7777 at start: macOS drops a whole
    /// reply whose mode carries file-type bits).
    pub file_mode: u32,
    pub dir_mode: u32,
    /// Create `db` with a small demo tree when it does not exist.
    pub create_demo: bool,
    /// Names that differ only by case are one name (LOOKUP finds either,
    /// a create of the other answers EXIST, labels differing only by case
    /// are told apart with a suffix), as on the Mac's own volumes; reported
    /// to clients in the case_insensitive attribute.
    pub case_insensitive: bool,
    /// Whose identity counts for ownership changes: "none" (callers as they
    /// are), "root" (uid 0 acts as nobody), "all" (everyone acts as nobody).
    pub squash: String,
    /// Who may do what: "owner" (every caller is every node's owner: one
    /// editor's own machine) or "mode" (the caller's uid and groups against
    /// each node's owner, group and mode bits; new nodes are the creator's).
    pub permissions: String,
    /// Machines that may use the export: addresses and CIDR ranges
    /// (`"192.168.1.0/24"`, `"10.0.0.5"`, `"fd00::/8"`). Empty: this machine
    /// only (loopback). Others are refused with an access error.
    pub clients: Vec<String>,
    /// Every change (WRITE, create, remove, rename, SETATTR, an OPEN for
    /// writing) answers ROFS; reads are served.
    pub read_only: bool,
    /// Clients must call from a privileged source port (below 1024), as
    /// root-run kernel clients do.
    pub secure: bool,
}

/// The export tables of a tuning file: one `[export]` table, or several
/// `[[export]]` tables. It reads as the first (or only) table, so settings
/// shared by every export's `Config` are read as `cfg.export.…`;
/// [`Config::each_export`] gives one `Config` per table.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportTables {
    /// At least one table.
    tables: Vec<ExportConfig>,
    /// Written as `[[export]]` (several exports under a pseudo-root) rather
    /// than `[export]`.
    several: bool,
}

impl Default for ExportTables {
    fn default() -> Self {
        ExportTables::one(ExportConfig::default())
    }
}

impl ExportTables {
    pub fn one(table: ExportConfig) -> ExportTables {
        ExportTables {
            tables: vec![table],
            several: false,
        }
    }

    /// Several exports, each at its own `path` (at least one table).
    pub fn several(tables: Vec<ExportConfig>) -> anyhow::Result<ExportTables> {
        anyhow::ensure!(!tables.is_empty(), "no export to serve");
        Ok(ExportTables {
            tables,
            several: true,
        })
    }

    pub fn tables(&self) -> &[ExportConfig] {
        &self.tables
    }

    /// Whether clients see a pseudo-root listing the exports rather than
    /// one export at `/`.
    pub fn has_pseudo_root(&self) -> bool {
        self.tables.len() > 1 || self.tables[0].path != "/"
    }
}

impl std::ops::Deref for ExportTables {
    type Target = ExportConfig;
    fn deref(&self) -> &ExportConfig {
        &self.tables[0]
    }
}

impl std::ops::DerefMut for ExportTables {
    fn deref_mut(&mut self) -> &mut ExportConfig {
        &mut self.tables[0]
    }
}

/// `[export]` or `[[export]]`: read through a TOML value, so a mistake in
/// a table keeps its own message ("unknown field `sqush`").
mod export_tables {
    use super::{ExportConfig, ExportTables};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ExportTables, D::Error> {
        let value = toml::Value::deserialize(d)?;
        if let toml::Value::Array(items) = value {
            let tables = items
                .into_iter()
                .map(|v| v.try_into::<ExportConfig>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(serde::de::Error::custom)?;
            return ExportTables::several(tables).map_err(serde::de::Error::custom);
        }
        let table: ExportConfig = value.try_into().map_err(serde::de::Error::custom)?;
        Ok(ExportTables::one(table))
    }

    pub fn serialize<S: Serializer>(t: &ExportTables, s: S) -> Result<S::Ok, S::Error> {
        if t.several {
            t.tables.serialize(s)
        } else {
            t.tables[0].serialize(s)
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    pub send_buffer: usize,
    pub recv_buffer: usize,
    pub nodelay: bool,
    /// Largest RPC record accepted; larger → the connection is closed.
    pub max_record: usize,
    /// Data calls (READ, WRITE, COMMIT) dispatched concurrently per
    /// connection: at least the 128 WRITEs a Mac keeps in flight.
    pub max_inflight_per_connection: usize,
    /// Other calls (lookups, attributes, opens, namespace changes) in
    /// flight per connection, admitted apart from data calls.
    pub max_inflight_metadata: usize,
    /// Bytes of READ replies a connection may have in flight or waiting to
    /// be sent; past it, no more calls are read off that socket until its
    /// replies drain (a client that never reads cannot grow the server).
    pub max_reply_bytes: usize,
    /// Threads, for the whole server, that run calls moving no file data
    /// (apart from the blocking pool where READs and WRITEs wait on disk).
    pub metadata_threads: usize,
    /// Linux: move WRITE payloads of 64 KiB to 1 MiB from the socket to
    /// the file through a pipe (`splice`), never copying them into user
    /// space. Ignored elsewhere.
    pub splice_writes: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NfsConfig {
    pub max_read: u32,
    pub max_write: u32,
    /// Lease time in seconds.
    pub lease_time: u32,
    /// Grace period after a restart, in seconds, while clients that held
    /// state reclaim it (only when there are such clients).
    pub grace_time: u32,
    /// Seconds a client past its lease keeps its opens and locks while no
    /// other client's request conflicts with them (a Mac asleep overnight
    /// wakes to its files as it left them); 0 releases them at the lease.
    pub courtesy_time: u64,
    /// Replies of non-idempotent COMPOUNDs kept for retransmissions.
    pub reply_cache_entries: u64,
    /// Ops allowed in one COMPOUND.
    pub max_ops_per_compound: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Nodes kept in memory (node id → node).
    pub nodes: u64,
    /// `(folder, name) → node` entries kept in cached directory listings.
    pub paths: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Open content files kept in the descriptor pool.
    pub open_files: u64,
    /// Write-behind window in bytes (Linux): each completed window of a
    /// streaming write is sent to disk at once, and the window `write_behind_lag`
    /// windows back is waited for and dropped from the page cache, so a long
    /// render never piles up dirty pages and stalls in the kernel's throttling.
    /// 0 turns it off.
    pub write_behind: u64,
    /// Windows in flight to disk before the write-behind thread waits for
    /// the oldest (WRITEs wait only when its queue is full). Short, so the
    /// file system's own reads do not queue behind much data.
    pub write_behind_lag: u64,
    /// Windows that may queue for the write-behind thread (for all files
    /// together). Past 4, WRITEs complete at about the disk's long-run
    /// rate, so the room left in the queue takes in spells of slow disk;
    /// in its last quarter they follow the disk's present rate down; full,
    /// they wait.
    /// Each queued window is dirty memory: 128 × 8 MiB = 1 GiB at most.
    pub write_behind_backlog: u64,
    /// Read-ahead window in bytes for streaming READs; 0 turns it off.
    pub read_ahead: u64,
    /// Windows kept requested ahead of a streaming reader.
    pub read_ahead_windows: u64,
    /// Linux: spliced WRITE payloads of 512 KiB–1 MiB, 4 KiB-aligned, go to disk
    /// with O_DIRECT (through an aligned buffer: still one CPU copy, none
    /// into the page cache), so frames wait on the disk's own latency, not
    /// on buffered writeback. Unaligned and smaller WRITEs stay buffered.
    pub direct_writes: bool,
    /// ...at offsets from this many bytes on (default 0: all of it). A
    /// larger mark keeps each file's first bytes buffered, so a copy
    /// shorter than it goes at page-cache speed (its COMMIT pays the
    /// disk) — when there is memory to spare: on a VM whose host backs
    /// guest memory lazily, filling the page cache ran at ~330 MB/s, and
    /// a capture's first GiB buffered made its slowest frames.
    pub direct_after: u64,
    /// Direct payloads (1 MiB at most each) answered before they reach the
    /// disk and written behind the reply, in arrival order, by one thread:
    /// the disk stays busy while the next payloads cross the socket, and
    /// a slow spell of it fills the queue instead of holding up frames.
    /// UNSTABLE only in effect: COMMIT and FILE_SYNC WRITEs wait for the
    /// file's queue. 0 answers each direct WRITE once it is on disk.
    pub direct_queue: u64,
    /// Linux 6.5+: READs of 512 KiB or more, at aligned offsets, of data
    /// with no page in the page cache go to disk with O_DIRECT into a
    /// reused aligned buffer; cached data is read through the cache.
    pub direct_reads: bool,
    /// How a FILE_SYNC/DATA_SYNC WRITE reaches stable storage: "range"
    /// (its own bytes and the size, drive cache flushed; whole file on
    /// macOS), "full" (the whole file, drive cache flushed: fdatasync /
    /// F_FULLFSYNC) or "barrier" (its bytes handed to the drive, no cache
    /// flush: survives a crash, not a power loss). COMMIT always does
    /// "full".
    pub file_sync: crate::storage::FileSync,
    /// Empty files kept ready in the storage folder's `.markbase-spare`
    /// (Linux), so a create renames one into place instead of waiting for
    /// the file system to find a free inode; 0: off.
    pub spare_files: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            address: "127.0.0.1".into(),
            port: 11112,
            mount_port: 0,
            blocking_threads: 16,
        }
    }
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            path: "/".into(),
            db: PathBuf::from("data/users/demo.sqlite"),
            storage: PathBuf::new(),
            export_id: 1,
            owner: "caller".into(),
            owner_group: "caller".into(),
            file_mode: 0o644,
            dir_mode: 0o755,
            create_demo: true,
            case_insensitive: true,
            squash: "none".into(),
            permissions: "owner".into(),
            clients: Vec::new(),
            read_only: false,
            secure: false,
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            send_buffer: 4 << 20,
            recv_buffer: 4 << 20,
            nodelay: true,
            max_record: (1 << 20) + (64 << 10),
            max_inflight_per_connection: 128,
            max_inflight_metadata: 32,
            max_reply_bytes: 32 << 20,
            metadata_threads: 8,
            splice_writes: true,
        }
    }
}

impl Default for NfsConfig {
    fn default() -> Self {
        NfsConfig {
            max_read: 1 << 20,
            max_write: 1 << 20,
            lease_time: 90,
            grace_time: 90,
            courtesy_time: 86_400,
            reply_cache_entries: 4096,
            max_ops_per_compound: 64,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            nodes: 1_000_000,
            paths: 1_000_000,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            open_files: 512,
            write_behind: 8 << 20,
            write_behind_lag: 8,
            write_behind_backlog: 128,
            read_ahead: 8 << 20,
            read_ahead_windows: 4,
            direct_writes: true,
            direct_after: 0,
            direct_queue: 32,
            direct_reads: true,
            file_sync: crate::storage::FileSync::Range,
            spare_files: 64,
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let mut cfg: Config = toml::from_str(text).context("parsing tuning TOML")?;
        cfg.mask_modes();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Keeps only the permission bits of the export's modes (a tuning file
    /// may give `0o100644` as `stat` shows it), saying so in the log.
    pub fn mask_modes(&mut self) {
        let modes = self.export.tables.iter_mut().flat_map(|t| {
            [
                ("file_mode", &mut t.file_mode),
                ("dir_mode", &mut t.dir_mode),
            ]
        });
        for (key, mode) in modes {
            if *mode & !0o7777 != 0 {
                tracing::warn!(
                    "export.{key} = {:#o} carries bits above 0o7777; serving {:#o}",
                    *mode,
                    *mode & 0o7777
                );
                *mode &= 0o7777;
            }
        }
    }

    /// The settings in effect, as a tuning.toml would give them (every
    /// key, defaults filled in).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("writing the settings as TOML")
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.nfs.max_write as usize + 4096 <= self.network.max_record,
            "network.max_record ({}) must exceed nfs.max_write ({}) plus headers",
            self.network.max_record,
            self.nfs.max_write
        );
        anyhow::ensure!(self.nfs.max_read >= 4096, "nfs.max_read is below 4096");
        anyhow::ensure!(
            self.network.max_inflight_per_connection > 0 && self.network.max_inflight_metadata > 0,
            "network.max_inflight_per_connection and max_inflight_metadata must be at least 1"
        );
        anyhow::ensure!(
            self.network.max_reply_bytes >= self.nfs.max_read as usize,
            "network.max_reply_bytes ({}) is below nfs.max_read ({}): one READ would not fit",
            self.network.max_reply_bytes,
            self.nfs.max_read
        );
        if !self.metrics.address.is_empty() {
            self.metrics
                .address
                .parse::<std::net::SocketAddr>()
                .map_err(|_| {
                    anyhow::anyhow!(
                        "metrics.address {:?} is not address:port (e.g. \"127.0.0.1:9111\")",
                        self.metrics.address
                    )
                })?;
        }
        for table in self.export.tables() {
            self.validate_export(table)
                .with_context(|| format!("in the export at {:?}", table.path))?;
        }
        self.validate_export_set()?;
        anyhow::ensure!(
            self.storage.open_files > 0,
            "storage.open_files must be at least 1"
        );
        anyhow::ensure!(
            self.storage.write_behind == 0 || self.storage.write_behind_backlog > 0,
            "storage.write_behind_backlog must be at least 1 while write_behind is on"
        );
        Ok(())
    }

    /// The settings of one export table.
    fn validate_export(&self, export: &ExportConfig) -> anyhow::Result<()> {
        anyhow::ensure!(
            ["none", "root", "all"].contains(&export.squash.as_str()),
            "export.squash is {:?}: \"none\", \"root\" or \"all\"",
            export.squash
        );
        anyhow::ensure!(
            ["owner", "mode"].contains(&export.permissions.as_str()),
            "export.permissions is {:?}: \"owner\" or \"mode\"",
            export.permissions
        );
        let clients = crate::export::clients::ClientList::parse(&export.clients, export.secure)
            .map_err(|e| anyhow::anyhow!("export.clients: {e}"))?;
        if clients.loopback_only() && !self.listens_on_loopback_only() {
            anyhow::bail!(
                "server.address {} can be reached from other machines, but export.clients is empty \
                 (this machine only): list the machines that may mount the export, e.g. \
                 clients = [\"192.168.1.0/24\"], or listen on 127.0.0.1",
                self.server.address
            );
        }
        Ok(())
    }

    /// Several exports: each at its own `/name`, with its own export id
    /// (handles carry it) and its own catalog.
    fn validate_export_set(&self) -> anyhow::Result<()> {
        let tables = self.export.tables();
        if !self.export.has_pseudo_root() {
            return Ok(());
        }
        let mut paths = std::collections::HashSet::new();
        let mut ids = std::collections::HashMap::new();
        let mut dbs = std::collections::HashSet::new();
        for t in tables {
            let name = t.path.strip_prefix('/').unwrap_or("");
            anyhow::ensure!(
                !name.is_empty()
                    && name.len() <= 255
                    && !name.contains(['/', '\0'])
                    && name != "."
                    && name != "..",
                "export path {:?}: with several exports (or a pseudo-root), each is at \"/name\", one name under /",
                t.path
            );
            anyhow::ensure!(
                paths.insert(name.to_lowercase()),
                "export path {:?} is given twice",
                t.path
            );
            if let Some(other) = ids.insert(t.export_id, &t.path) {
                anyhow::bail!(
                    "exports {other:?} and {:?} both have export_id {}: give each export its own \
                     (file handles carry it, so it must not change once clients mount)",
                    t.path,
                    t.export_id
                );
            }
            anyhow::ensure!(
                dbs.insert(t.db.clone()),
                "the catalog {} is exported twice",
                t.db.display()
            );
        }
        Ok(())
    }

    /// Exports every `DIR/<user>.sqlite` as `/<user>` (MarkBase keeps one
    /// catalog per user), each like the `[export]` table but for its
    /// catalog, its storage folder (`DIR/<user>.storage`) and its export id
    /// (a hash of the user's name, so handles stay valid across restarts).
    pub fn export_users(&mut self, dir: &Path) -> anyhow::Result<()> {
        let mut catalogs: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading the users' folder {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sqlite") && p.is_file())
            .collect();
        catalogs.sort();
        anyhow::ensure!(
            !catalogs.is_empty(),
            "{} holds no <user>.sqlite catalog to export",
            dir.display()
        );
        let template = (*self.export).clone();
        let tables = catalogs
            .into_iter()
            .map(|db| {
                let user = db
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                ExportConfig {
                    path: format!("/{user}"),
                    export_id: user_export_id(&user),
                    storage: PathBuf::new(),
                    create_demo: false,
                    db,
                    ..template.clone()
                }
            })
            .collect();
        self.export = ExportTables::several(tables)?;
        Ok(())
    }

    /// One `Config` per export table, each with that table as its only
    /// export (what an `Export` is opened with).
    pub fn each_export(&self) -> Vec<Config> {
        self.export
            .tables()
            .iter()
            .map(|t| {
                let mut one = self.clone();
                one.export = ExportTables::one(t.clone());
                one
            })
            .collect()
    }

    /// Whether `server.address` is a loopback address (a name such as
    /// `localhost` counts only when it is the name itself).
    pub fn listens_on_loopback_only(&self) -> bool {
        let a = self.server.address.trim_matches(|c| c == '[' || c == ']');
        a.eq_ignore_ascii_case("localhost")
            || a.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.to_canonical().is_loopback())
    }

    /// The storage folder, derived from the database path when not set.
    pub fn storage_dir(&self) -> PathBuf {
        if !self.export.storage.as_os_str().is_empty() {
            return self.export.storage.clone();
        }
        self.export.db.with_extension("storage")
    }
}

/// The export id of a user's catalog under `serve --users`: a hash of the
/// name, never 0 (kept apart from the pseudo-root's fsid) and never 1 (the
/// single export's default).
fn user_export_id(user: &str) -> u32 {
    let h = crate::catalog::fnv1a(user.as_bytes());
    2 + ((h ^ (h >> 32)) as u32) % (u32::MAX - 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_tuning_file_matches_defaults() {
        let text = include_str!("../tuning.toml");
        assert_eq!(Config::from_toml(text).unwrap(), Config::default());
    }

    #[test]
    fn the_settings_printed_read_back_as_the_same_settings() {
        let mut c =
            Config::from_toml("[server]\nport = 2049\n[catalog]\nfeed = \"scan\"\n").unwrap();
        c.storage.file_sync = crate::storage::FileSync::Barrier;
        let text = c.to_toml().unwrap();
        assert!(text.contains("[network]") && text.contains("max_reply_bytes"));
        assert_eq!(Config::from_toml(&text).unwrap(), c);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        assert!(Config::from_toml("[server]\nprot = 1\n").is_err());
        assert!(Config::from_toml("[nfs]\nmax_write = 8388608\n").is_err());
        let c = Config::from_toml("[server]\nport = 2049\n").unwrap();
        assert_eq!(c.server.port, 2049);
        assert_eq!(c.nfs, NfsConfig::default());
        for bad in [
            "[export]\npermissions = \"acl\"\n",
            "[export]\nsquash = \"roots\"\n",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
        let c = Config::from_toml("[export]\npermissions = \"mode\"\n").unwrap();
        assert_eq!(c.export.permissions, "mode");
    }

    #[test]
    fn a_server_other_machines_can_reach_needs_a_client_list() {
        for open in ["0.0.0.0", "192.168.1.10", "::", "[::]"] {
            let text = format!("[server]\naddress = \"{open}\"\n");
            let e = format!("{:#}", Config::from_toml(&text).unwrap_err());
            assert!(e.contains("export.clients is empty"), "{open}: {e}");
            let listed = format!("{text}[export]\nclients = [\"192.168.1.0/24\"]\n");
            assert!(Config::from_toml(&listed).is_ok(), "{open}");
        }
        for local in ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"] {
            let text = format!("[server]\naddress = \"{local}\"\n");
            assert!(Config::from_toml(&text).is_ok(), "{local}");
        }
        let e = format!(
            "{:#}",
            Config::from_toml("[export]\nclients = [\"10.1.2.3/8\"]\n").unwrap_err()
        );
        assert!(
            e.contains("export.clients") && e.contains("10.0.0.0/8"),
            "{e}"
        );
    }

    #[test]
    fn several_export_tables_each_at_its_own_path() {
        let text = "[[export]]\npath = \"/warren\"\ndb = \"w.sqlite\"\n\
                    [[export]]\npath = \"/accusys\"\ndb = \"a.sqlite\"\nexport_id = 2\nread_only = true\n";
        let c = Config::from_toml(text).unwrap();
        assert!(c.export.has_pseudo_root());
        let each = c.each_export();
        assert_eq!(each.len(), 2);
        assert_eq!(each[1].export.path, "/accusys");
        assert!(each[1].export.read_only && !each[0].export.read_only);
        assert_eq!(each[1].storage_dir(), PathBuf::from("a.storage"));
        // check-config prints them back as tables of an array.
        let printed = c.to_toml().unwrap();
        assert!(printed.contains("[[export]]"), "{printed}");
        assert_eq!(Config::from_toml(&printed).unwrap(), c);
        // One [export] table at / has no pseudo-root.
        assert!(!Config::default().export.has_pseudo_root());

        for (bad, says) in [
            (text.replace("/accusys", "/warren"), "given twice"),
            (text.replace("export_id = 2\n", ""), "both have export_id 1"),
            (text.replace("a.sqlite", "w.sqlite"), "exported twice"),
            (text.replace("/accusys", "/a/b"), "one name under /"),
            (text.replace("/accusys", "/"), "one name under /"),
            (text.replace("read_only", "read_olny"), "unknown field"),
            (
                text.replace("read_only = true", "squash = \"x\""),
                "at \"/accusys\"",
            ),
        ] {
            let e = format!("{:#}", Config::from_toml(&bad).unwrap_err());
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn every_user_catalog_of_a_folder_is_an_export() {
        let dir = tempfile::tempdir().unwrap();
        for user in ["warren", "accusys"] {
            std::fs::write(dir.path().join(format!("{user}.sqlite")), b"").unwrap();
        }
        std::fs::create_dir(dir.path().join("warren.storage")).unwrap();
        let mut c = Config::default();
        c.export.read_only = true;
        c.export_users(dir.path()).unwrap();
        let each = c.each_export();
        let paths: Vec<&str> = each.iter().map(|e| e.export.path.as_str()).collect();
        assert_eq!(paths, ["/accusys", "/warren"]);
        assert_eq!(each[1].storage_dir(), dir.path().join("warren.storage"));
        assert!(each
            .iter()
            .all(|e| e.export.read_only && !e.export.create_demo));
        assert_ne!(each[0].export.export_id, each[1].export.export_id);
        assert_eq!(each[1].export.export_id, user_export_id("warren"));
        c.validate().unwrap();
        let empty = tempfile::tempdir().unwrap();
        let e = Config::default().export_users(empty.path()).unwrap_err();
        assert!(format!("{e:#}").contains("no <user>.sqlite"), "{e:#}");
    }

    #[test]
    fn modes_with_file_type_bits_are_masked() {
        // 0o100644 and 0o40755, as `stat` prints them.
        let c = Config::from_toml("[export]\nfile_mode = 33188\ndir_mode = 16877\n").unwrap();
        assert_eq!(c.export.file_mode, 0o644);
        assert_eq!(c.export.dir_mode, 0o755);
    }
}
