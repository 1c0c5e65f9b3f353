//! The NFSv4 program: the export it serves and the state it keeps.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::compound;
use super::consts::{Status, NFS4_PROGRAM, NFS4_VERSION, PROC_COMPOUND, PROC_NULL};
use super::fh;
use super::state::State;
use crate::catalog::{Catalog, CatalogError, Node, NodeId};
use crate::config::Config;
use crate::rpc::{AcceptError, CallContext, Program, ReplyBody};
use crate::storage::{volume_stats, FilePool, VolumeStats};

pub struct Nfs4Server {
    config: Config,
    catalog: Arc<Catalog>,
    files: FilePool,
    storage_dir: PathBuf,
    pub(crate) state: Mutex<State>,
    /// Content files already reported missing (logged once each).
    missing_logged: Mutex<HashSet<u64>>,
    volume: Mutex<Option<(Instant, VolumeStats)>>,
    /// Changes at every start, so clients resend what they never committed.
    write_verifier: [u8; 8],
    /// Content of removed files still open somewhere: unlinked at the last
    /// CLOSE.
    unlink_on_close: Mutex<HashMap<u64, PathBuf>>,
}

impl std::fmt::Debug for Nfs4Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nfs4Server")
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

/// Changes at every start: client ids and stateids carry it.
fn boot_instance() -> u32 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_secs() as u32) ^ (t.subsec_nanos() << 8) ^ std::process::id()
}

impl Nfs4Server {
    pub fn new(config: Config, catalog: Arc<Catalog>, storage_dir: PathBuf) -> Nfs4Server {
        let lease = Duration::from_secs(config.nfs.lease_time as u64);
        let boot = boot_instance();
        let mut write_verifier = [0u8; 8];
        write_verifier[..4].copy_from_slice(&boot.to_be_bytes());
        write_verifier[4..].copy_from_slice(
            &(SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos())
            .to_be_bytes(),
        );
        Nfs4Server {
            write_verifier,
            unlink_on_close: Mutex::new(HashMap::new()),
            files: FilePool::new(config.storage.open_files),
            state: Mutex::new(State::new(boot, lease)),
            config,
            catalog,
            storage_dir,
            missing_logged: Mutex::new(HashSet::new()),
            volume: Mutex::new(None),
        }
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

    pub fn state_counts(&self) -> super::state::StateCounts {
        self.state.lock().counts()
    }

    pub fn write_verifier(&self) -> [u8; 8] {
        self.write_verifier
    }

    pub fn storage_dir(&self) -> &std::path::Path {
        &self.storage_dir
    }

    /// Where a new file's content goes: spread over 256 subfolders.
    pub(crate) fn content_path_for(&self, id: &NodeId) -> PathBuf {
        let name = match id {
            NodeId::Int(i) => format!("{i}"),
            NodeId::Text(s) => s.to_string(),
            NodeId::Root => "root".to_string(),
        };
        let sub = format!("{:02x}", id.fileid() & 0xff);
        self.storage_dir.join(sub).join(name)
    }

    /// Removes a deleted node's content file, now or (if the file is still
    /// open) at its last CLOSE.
    pub(crate) fn discard_content(&self, node: &Node) {
        let Some(path) = node.meta().content.clone() else {
            return;
        };
        // Content of imported files lives outside our storage folder: a
        // catalog removal must not delete a user's original.
        if !path.starts_with(&self.storage_dir) {
            return;
        }
        self.files.forget(node.fileid);
        if self.state.lock().is_open(node.fileid) {
            self.unlink_on_close.lock().insert(node.fileid, path);
            return;
        }
        remove_content_file(&path);
    }

    /// Called after a CLOSE: removes content whose node is gone.
    pub(crate) fn closed(&self, fileid: u64) {
        if self.state.lock().is_open(fileid) {
            return;
        }
        if let Some(path) = self.unlink_on_close.lock().remove(&fileid) {
            self.files.forget(fileid);
            remove_content_file(&path);
        }
    }

    pub(crate) fn handle_of(&self, node: &Node) -> Result<Vec<u8>, Status> {
        fh::encode(self.config.export.export_id, &node.id)
    }

    /// The node a file handle names.
    pub(crate) fn node_of_handle(&self, handle: &[u8]) -> Result<Arc<Node>, Status> {
        let id = fh::decode(self.config.export.export_id, handle)?;
        self.node(&id)
    }

    pub(crate) fn node(&self, id: &NodeId) -> Result<Arc<Node>, Status> {
        self.catalog.node(id).map_err(|e| catalog_status(&e))
    }

    pub(crate) fn subfolder_count(&self, dir: &Node) -> u32 {
        self.catalog
            .listing(&dir.id)
            .map(|l| l.read().subfolders())
            .unwrap_or(0)
    }

    /// statvfs of the storage folder, refreshed at most once a second.
    pub(crate) fn volume_stats(&self) -> VolumeStats {
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

    /// Logs a missing content file once per node.
    pub(crate) fn report_missing(&self, node: &Node, err: &std::io::Error) {
        if self.missing_logged.lock().insert(node.fileid) {
            let meta = node.meta();
            tracing::warn!(
                node = %node.id,
                label = %meta.label,
                path = ?meta.content,
                error = %err,
                "content file of a catalog node cannot be opened; READ answers NFS4ERR_IO"
            );
        }
    }
}

fn remove_content_file(path: &std::path::Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove content file");
        }
    }
}

/// How a catalog failure looks to a client.
pub(crate) fn catalog_status(e: &CatalogError) -> Status {
    match e {
        CatalogError::NotFound(_) => Status::Stale,
        CatalogError::NotFolder(_) => Status::NotDir,
        CatalogError::Exists { .. } => Status::Exist,
        CatalogError::NotEmpty(_) => Status::NotEmpty,
        CatalogError::IntoItself(_) => Status::Inval,
        CatalogError::TypeMismatch(_) => Status::Exist,
        CatalogError::Sql { .. } | CatalogError::Commit(_) => {
            tracing::error!(error = %e, "catalog error");
            Status::ServerFault
        }
    }
}

impl Program for Nfs4Server {
    fn number(&self) -> u32 {
        NFS4_PROGRAM
    }

    fn versions(&self) -> (u32, u32) {
        (NFS4_VERSION, NFS4_VERSION)
    }

    fn call(&self, ctx: &CallContext, args: &[u8], out: &mut ReplyBody) -> Result<(), AcceptError> {
        match ctx.procedure {
            PROC_NULL => Ok(()),
            PROC_COMPOUND => compound::run(self, ctx, args, out),
            _ => Err(AcceptError::ProcUnavail),
        }
    }
}
