//! The NFSv4 program: the export it serves and the state it keeps.

use std::collections::HashSet;
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
        Nfs4Server {
            files: FilePool::new(config.storage.open_files),
            state: Mutex::new(State::new(boot_instance(), lease)),
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
