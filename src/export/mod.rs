//! One exported catalog as every NFS version serves it: the catalog, the
//! content files (descriptor pool and storage folder), the file handles
//! that name its nodes, the write verifier, and the content of removed
//! files kept for the opens that still use them. It knows the catalog and
//! storage layers and no NFS version's wire format; `nfs3`, `nfs4` and
//! `mount` each speak their own protocol over one `Export`.

pub mod clients;
pub mod handle;
pub mod held_reply;
pub mod permission;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::catalog::{Catalog, CatalogError, Node, NodeId, NodeKind, NodeMeta};
use crate::config::Config;
use crate::storage::{volume_stats, FilePool, ReadAhead, VolumeStats, WriteBehind};
use clients::{ClientList, Refusal};
pub use handle::HandleError;

/// Why a handle does not give a node.
#[derive(Debug)]
pub enum NodeError {
    Handle(HandleError),
    Catalog(CatalogError),
}

/// Tells whether a stateful protocol (NFSv4's opens) holds a file open.
pub type OpenCheck = Box<dyn Fn(u64) -> bool + Send + Sync>;

pub struct Export {
    config: Config,
    catalog: Arc<Catalog>,
    files: FilePool,
    storage_dir: PathBuf,
    /// Changes at every start, so clients resend what they never committed
    /// (NFSv3 and NFSv4 alike).
    write_verifier: [u8; 8],
    /// Content files already reported missing (logged once each).
    missing_logged: Mutex<HashSet<u64>>,
    volume: Mutex<Option<(Instant, VolumeStats)>>,
    /// Content of removed files still open somewhere: unlinked at the last
    /// CLOSE.
    unlink_on_close: Mutex<HashMap<u64, PathBuf>>,
    open_check: OnceLock<OpenCheck>,
    clients: ClientList,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

impl Export {
    pub fn new(config: Config, catalog: Arc<Catalog>, storage_dir: PathBuf) -> Export {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut write_verifier = [0u8; 8];
        write_verifier[..4]
            .copy_from_slice(&((t.as_secs() as u32) ^ std::process::id()).to_be_bytes());
        write_verifier[4..].copy_from_slice(&t.subsec_nanos().to_be_bytes());
        let clients = ClientList::parse(&config.export.clients, config.export.secure)
            .unwrap_or_else(|e| {
                // Config::validate refuses this before any export opens.
                tracing::error!(error = %e, "export.clients: serving this machine only");
                ClientList::default()
            });
        let export = Export {
            clients,
            files: FilePool::new(
                config.storage.open_files,
                WriteBehind {
                    window: config.storage.write_behind,
                    lag: config.storage.write_behind_lag,
                    backlog: config.storage.write_behind_backlog,
                },
                ReadAhead {
                    window: config.storage.read_ahead,
                    windows: config.storage.read_ahead_windows,
                },
            )
            .with_direct_reads(config.storage.direct_reads)
            .with_direct_writes(
                config.storage.direct_writes,
                config.storage.direct_after,
                config.storage.direct_queue as usize,
            )
            .with_file_sync(config.storage.file_sync)
            .with_spare_files(&storage_dir, config.storage.spare_files),
            write_verifier,
            config,
            catalog,
            storage_dir,
            missing_logged: Mutex::new(HashSet::new()),
            volume: Mutex::new(None),
            unlink_on_close: Mutex::new(HashMap::new()),
            open_check: OnceLock::new(),
        };
        // New content files' folder entries are on disk before the
        // catalog's journal no longer holds their creates.
        let entries = export.files.new_entries();
        export
            .catalog
            .before_durable(Box::new(move || entries.sync_all()));
        export
    }

    /// Lets the export ask whether a file is open (set once, by the
    /// program that keeps opens).
    pub fn set_open_check(&self, check: OpenCheck) {
        let _ = self.open_check.set(check);
    }

    fn is_open(&self, fileid: u64) -> bool {
        self.open_check.get().is_some_and(|f| f(fileid))
    }

    /// Whether a call from `peer` is served (`export.clients`,
    /// `export.secure`); a refusal is logged, once a minute per address.
    pub fn admit(&self, peer: Option<std::net::SocketAddr>) -> Result<(), Refusal> {
        self.clients.admit(peer)
    }

    /// Whether calls from `peer` are served, without logging a refusal
    /// (to tell which of several exports a machine may see).
    pub fn serves(&self, peer: Option<std::net::SocketAddr>) -> bool {
        self.clients.check(peer).is_ok()
    }

    /// Where clients mount the export (`/`, or `/name` under a pseudo-root).
    pub fn path(&self) -> &str {
        &self.config.export.path
    }

    /// The machines the export serves, as `showmount -e` lists them.
    pub fn client_names(&self) -> Vec<String> {
        self.clients.names()
    }

    /// Whether every change is refused with ROFS (`export.read_only`).
    pub fn read_only(&self) -> bool {
        self.config.export.read_only
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn files(&self) -> &FilePool {
        &self.files
    }

    pub fn write_verifier(&self) -> [u8; 8] {
        self.write_verifier
    }

    pub fn storage_dir(&self) -> &Path {
        &self.storage_dir
    }

    /// Where a new file's content goes: spread over 256 subfolders.
    pub fn content_path_for(&self, id: &NodeId) -> PathBuf {
        let name = match id {
            NodeId::Int(i) => format!("{i}"),
            NodeId::Text(s) => s.to_string(),
            NodeId::Root => "root".to_string(),
        };
        let sub = format!("{:02x}", id.fileid() & 0xff);
        self.storage_dir.join(sub).join(name)
    }

    /// What discards a removed node's content, to run once the removal is
    /// durable (a crash before then leaves the node, which must keep its
    /// bytes); None for a node that is not a file.
    pub fn discard_content_later(
        self: &Arc<Self>,
        node: Arc<Node>,
    ) -> Option<held_reply::AfterDurable> {
        if node.kind != NodeKind::File {
            return None;
        }
        let export = self.clone();
        Some(Box::new(move || export.discard_content(&node)))
    }

    /// Removes a deleted node's content file, now or (if the file is still
    /// open) at its last CLOSE.
    fn discard_content(&self, node: &Node) {
        let Some(path) = node.meta().content.clone() else {
            return;
        };
        // Content of imported files lives outside our storage folder: a
        // catalog removal must not delete a user's original.
        if !path.starts_with(&self.storage_dir) {
            return;
        }
        if self.is_open(node.fileid) {
            self.files.forget(node.fileid);
            self.unlink_on_close.lock().insert(node.fileid, path);
            return;
        }
        self.remove_content_file(node.fileid, &path);
    }

    /// Removes a removed node's content file once the caller has answered
    /// (see [`crate::storage::FilePool::remove_content_later`]).
    fn remove_content_file(&self, fileid: u64, path: &Path) {
        self.files.remove_content_later(fileid, path);
    }

    /// Whether closing `fileid`'s last open would remove its content
    /// (it was removed while open).
    pub fn content_goes_with_last_close(&self, fileid: u64) -> bool {
        self.unlink_on_close.lock().contains_key(&fileid)
    }

    /// Called after a CLOSE: removes content whose node is gone.
    pub fn closed(&self, fileid: u64) {
        if self.is_open(fileid) {
            return;
        }
        if let Some(path) = self.unlink_on_close.lock().remove(&fileid) {
            self.remove_content_file(fileid, &path);
        }
    }

    /// The NFSv4 handle of `node`.
    pub fn handle_of(&self, node: &Node) -> Result<Vec<u8>, HandleError> {
        handle::encode(self.config.export.export_id, &node.id)
    }

    /// The handle of `node` in at most `limit` bytes (NFSv3: 64).
    pub fn handle_within(&self, node: &Node, limit: usize) -> Result<Vec<u8>, HandleError> {
        handle::encode_within(self.config.export.export_id, &node.id, limit)
    }

    /// The node a file handle names. A node removed (by the MarkBase app, a
    /// REMOVE, a RENAME over it) while a client has it open keeps serving
    /// that open until CLOSE; its content goes with the last open.
    pub fn node_of_handle(&self, fh: &[u8]) -> Result<Arc<Node>, NodeError> {
        let id =
            match handle::decode(self.config.export.export_id, fh).map_err(NodeError::Handle)? {
                handle::HandleId::Id(id) => id,
                handle::HandleId::Hashed { prefix, hash } => self
                    .catalog
                    .long_id(&prefix, hash)
                    .map_err(NodeError::Catalog)?
                    .ok_or(NodeError::Handle(HandleError::Stale))?,
            };
        match self.catalog.node(&id) {
            Err(CatalogError::NotFound(_)) if self.is_open(id.fileid()) => self
                .catalog
                .removed(&id)
                .ok_or(NodeError::Handle(HandleError::Stale)),
            other => other.map_err(NodeError::Catalog),
        }
    }

    /// The link count shown for `node`: 2 plus its subfolders for a
    /// folder, 1 for anything else. A folder's may load its listing under
    /// the catalog's namespace lock, so callers count it before they lock
    /// the node's metadata (the catalog's lock order, `Catalog::ns_lock`).
    pub fn link_count(&self, node: &Node) -> u32 {
        if node.kind != NodeKind::Folder {
            return 1;
        }
        2 + self
            .catalog
            .listing(&node.id)
            .map(|l| l.read().subfolders())
            .unwrap_or(0)
    }

    /// statvfs of the storage folder, refreshed at most once a second.
    pub fn volume_stats(&self) -> VolumeStats {
        let mut v = self.volume.lock();
        if let Some((at, s)) = *v {
            if at.elapsed() < Duration::from_secs(1) {
                return s;
            }
        }
        let s = volume_stats(&self.storage_dir).unwrap_or_default();
        *v = Some((Instant::now(), s));
        s
    }

    /// The owner shown for a node to a caller with `uid`: SETATTR's, else
    /// the export's (`export.owner`), else — "caller" — the caller's own.
    pub fn owner_of(&self, meta: &NodeMeta, uid: u32) -> String {
        shown_id(meta.owner.as_deref(), &self.config.export.owner, uid)
    }

    /// The owner's uid as [`Export::owner_of`] shows it, without building
    /// the string (every NFSv3 reply carries it); None for an owner that
    /// is not a number.
    pub fn owner_uid(&self, meta: &NodeMeta, uid: u32) -> Option<u32> {
        shown_number(meta.owner.as_deref(), &self.config.export.owner, uid)
    }

    /// The group's gid as [`Export::group_of`] shows it.
    pub fn group_gid(&self, meta: &NodeMeta, gid: u32) -> Option<u32> {
        shown_number(
            meta.owner_group.as_deref(),
            &self.config.export.owner_group,
            gid,
        )
    }

    /// The group shown for a node to a caller with `gid`.
    pub fn group_of(&self, meta: &NodeMeta, gid: u32) -> String {
        shown_id(
            meta.owner_group.as_deref(),
            &self.config.export.owner_group,
            gid,
        )
    }

    /// A node's mode: permission bits only (macOS drops a whole GETATTR
    /// reply whose mode has bits above 0o7777); SETATTR's, else the
    /// export's for its kind.
    pub fn mode_of(&self, node: &Node, meta: &NodeMeta) -> u32 {
        let cfg = &self.config.export;
        let fallback = match node.kind {
            NodeKind::Folder => cfg.dir_mode,
            NodeKind::Symlink => 0o777,
            _ => cfg.file_mode,
        };
        meta.mode.unwrap_or(fallback) & 0o7777
    }

    /// Logs a missing content file once per node.
    pub fn report_missing(&self, node: &Node, err: &std::io::Error) {
        if self.missing_logged.lock().insert(node.fileid) {
            let meta = node.meta();
            tracing::warn!(
                node = %node.id,
                label = %meta.label,
                path = ?meta.content,
                error = %err,
                "content file of a catalog node cannot be opened; READ answers an I/O error"
            );
        }
    }
}

/// Every export of a server, in the tuning file's order (at least one):
/// what NFSv4, NFSv3 and MOUNT each look an export up in, by the id a
/// handle carries or by the path a client mounts.
#[derive(Debug, Clone)]
pub struct Exports(Vec<Arc<Export>>);

impl Exports {
    /// `all` must hold at least one export.
    pub fn new(all: Vec<Arc<Export>>) -> Exports {
        assert!(!all.is_empty(), "a server needs an export");
        Exports(all)
    }

    /// Whether clients see a pseudo-root listing the exports (several, or
    /// one not at `/`) rather than one export at `/`.
    pub fn has_pseudo_root(&self) -> bool {
        self.0.len() > 1 || self.0[0].path() != "/"
    }

    /// The position of the export whose id a handle carries.
    pub fn index_of_id(&self, export_id: u32) -> Option<usize> {
        self.0
            .iter()
            .position(|e| e.config.export.export_id == export_id)
    }

    /// The export a file handle of ours names (None for the pseudo-root's
    /// handle or one that is not ours).
    pub fn of_handle(&self, fh: &[u8]) -> Option<&Arc<Export>> {
        match handle::owner_of(fh).ok()? {
            handle::Owner::Export(id) => self.index_of_id(id).map(|i| &self.0[i]),
            handle::Owner::PseudoRoot => None,
        }
    }

    /// The export `path` is in, and the rest of the path inside it.
    pub fn at_path<'p>(&self, path: &'p str) -> Option<(&Arc<Export>, &'p str)> {
        self.0.iter().find_map(|e| {
            let rest = path.strip_prefix(e.path().trim_end_matches('/'))?;
            (rest.is_empty() || rest.starts_with('/')).then_some((e, rest))
        })
    }
}

impl std::ops::Deref for Exports {
    type Target = [Arc<Export>];
    fn deref(&self) -> &[Arc<Export>] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Exports {
    type Item = &'a Arc<Export>;
    type IntoIter = std::slice::Iter<'a, Arc<Export>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The file id of an export's root. An export under a pseudo-root (path
/// `/name`) has one of its own, made from the export id: the pseudo-root
/// lists the roots of several catalogs, whose own root ids are all one,
/// and the Mac takes an export root's mounted_on_fileid as its file id
/// (kext nfs4_subs.c: nfs4_parsefattr), so both must be this one number.
pub fn root_fileid(export: &crate::config::ExportConfig) -> u64 {
    if export.path == "/" {
        crate::catalog::ROOT_FILEID
    } else {
        crate::catalog::ROOT_FILEID | (1 << 32) | export.export_id as u64
    }
}

/// The value of `export.owner` / `export.owner_group` that reports the
/// caller's own ids.
pub const CALLER: &str = "caller";

fn shown_id(set: Option<&str>, configured: &str, caller: u32) -> String {
    match set {
        Some(s) => s.to_string(),
        None if configured == CALLER => caller.to_string(),
        None => configured.to_string(),
    }
}

fn shown_number(set: Option<&str>, configured: &str, caller: u32) -> Option<u32> {
    match set {
        Some(s) => s.parse().ok(),
        None if configured == CALLER => Some(caller),
        None => configured.parse().ok(),
    }
}
