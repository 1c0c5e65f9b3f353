//! The NFSv4 program: the export it serves and the state it keeps.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::compound;
use super::consts::{Status, NFS4_PROGRAM, NFS4_VERSION, PROC_COMPOUND, PROC_NULL};
use super::fh;
use super::state::State;
use crate::catalog::{fnv1a, Catalog, CatalogError, Node, NodeId};
use crate::config::Config;
use crate::rpc::{AcceptError, CallContext, Program, ReplyBody};
use crate::storage::{volume_stats, FilePool, ReadAhead, VolumeStats, WriteBehind};

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
    /// Duplicate request cache: replies of COMPOUNDs with non-idempotent
    /// ops, so a retransmission after a reconnect gets the original answer
    /// instead of a spurious NOENT/EXIST.
    replies: moka::sync::Cache<(String, u32, u64), Arc<Vec<u8>>>,
    pub(crate) latency: super::latency::OpLatency,
    started: Instant,
    /// Milliseconds after `started` when the next lease sweep is due.
    next_sweep_ms: AtomicU64,
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
        let reclaimable: HashSet<Vec<u8>> = catalog
            .nfs_clients()
            .map(|v| v.into_iter().collect())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the NFS client list: no reclaim");
                HashSet::new()
            });
        if !reclaimable.is_empty() {
            tracing::info!(
                clients = reclaimable.len(),
                seconds = config.nfs.grace_time,
                "grace period: clients of the previous run may reclaim their state"
            );
        }
        let grace = Duration::from_secs(config.nfs.grace_time as u64);
        let earlier_boots = catalog.record_boot(boot).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot record the boot instance: earlier runs' stateids will read as BAD, not STALE");
            HashSet::new()
        });
        let state = State::new(boot, lease, grace, reclaimable, Instant::now())
            .with_courtesy(Duration::from_secs(config.nfs.courtesy_time))
            .with_earlier_boots(earlier_boots);
        Nfs4Server {
            latency: Default::default(),
            started: Instant::now(),
            next_sweep_ms: AtomicU64::new(0),
            write_verifier,
            replies: moka::sync::Cache::builder()
                .max_capacity(config.nfs.reply_cache_entries.max(1))
                .time_to_live(Duration::from_secs(300))
                .build(),
            unlink_on_close: Mutex::new(HashMap::new()),
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
            .with_file_sync(config.storage.file_sync),
            state: Mutex::new(state),
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

    /// Expires silent clients' leases (at most once a second) and forgets
    /// them in the catalog's client list.
    fn sweep(&self) {
        // Checked without the state lock: every COMPOUND (each WRITE too)
        // passes here, and a sweep is due at most once a second.
        let now = Instant::now();
        let ms = now.duration_since(self.started).as_millis() as u64;
        let due = self.next_sweep_ms.load(Ordering::Relaxed);
        if ms < due
            || self
                .next_sweep_ms
                .compare_exchange(due, ms + 1000, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let gone = {
            let mut st = self.state.lock();
            let mut gone = st.expire(now);
            gone.extend(st.take_unreclaimed(now));
            gone
        };
        if !gone.is_empty() {
            tracing::info!(
                clients = gone.len(),
                "NFS client leases expired; their state is released"
            );
            self.catalog.forget_nfs_clients(gone);
        }
    }

    /// Per-operation latency table (p50/p99/max).
    pub fn latency_report(&self) -> String {
        self.latency.report()
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
        if self.state.lock().is_open(node.fileid) {
            self.files.forget(node.fileid);
            self.unlink_on_close.lock().insert(node.fileid, path);
            return;
        }
        self.remove_content_file(node.fileid, &path);
    }

    /// Unlinks a removed node's content file; its blocks are freed in the
    /// background (see [`crate::storage::FilePool::remove_content`]).
    fn remove_content_file(&self, fileid: u64, path: &std::path::Path) {
        if let Err(e) = self.files.remove_content(fileid, path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), fileid, error = %e, "could not remove content file");
            }
        }
    }

    /// Called after a CLOSE: removes content whose node is gone.
    pub(crate) fn closed(&self, fileid: u64) {
        if self.state.lock().is_open(fileid) {
            return;
        }
        if let Some(path) = self.unlink_on_close.lock().remove(&fileid) {
            self.remove_content_file(fileid, &path);
        }
    }

    pub(crate) fn handle_of(&self, node: &Node) -> Result<Vec<u8>, Status> {
        fh::encode(self.config.export.export_id, &node.id)
    }

    /// The node a file handle names.
    pub(crate) fn node_of_handle(&self, handle: &[u8]) -> Result<Arc<Node>, Status> {
        let id = match fh::decode(self.config.export.export_id, handle)? {
            fh::HandleId::Id(id) => id,
            fh::HandleId::Hashed { prefix, hash } => self
                .catalog
                .long_id(&prefix, hash)
                .map_err(|e| catalog_status(&e))?
                .ok_or(Status::Stale)?,
        };
        match self.node(&id) {
            // Removed (by the MarkBase app, a REMOVE, a RENAME over it)
            // while a client has it open: the open keeps serving until
            // CLOSE; its content goes with the last open.
            Err(Status::Stale) if self.state.lock().is_open(id.fileid()) => {
                self.catalog.removed(&id).ok_or(Status::Stale)
            }
            other => other,
        }
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

fn peer_host(ctx: &CallContext) -> String {
    ctx.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default()
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

    fn bulk_argument(
        &self,
        version: u32,
        procedure: u32,
        args_head: &[u8],
    ) -> Option<crate::rpc::BulkArgument> {
        if version != NFS4_VERSION || procedure != PROC_COMPOUND {
            return None;
        }
        compound::locate_write_data(args_head, self.config.nfs.max_write as usize)
    }

    fn is_data_call(&self, version: u32, procedure: u32, args_head: &[u8]) -> bool {
        version == NFS4_VERSION && procedure == PROC_COMPOUND && compound::moves_data(args_head)
    }

    fn call(&self, ctx: &CallContext, args: &[u8], out: &mut ReplyBody) -> Result<(), AcceptError> {
        match ctx.procedure {
            PROC_NULL => Ok(()),
            PROC_COMPOUND => {
                self.sweep();
                // The key hashes only the head of the arguments: cached
                // COMPOUNDs (CREATE, REMOVE, RENAME, LINK) are small, and
                // hashing a 1 MiB WRITE on every call would cost more than
                // the WRITE itself.
                let head = &args[..args.len().min(512)];
                let key = (
                    ctx.credentials.principal() + &peer_host(ctx),
                    ctx.xid,
                    fnv1a(head) ^ (args.len() as u64).rotate_left(32),
                );
                if let Some(reply) = self.replies.get(&key) {
                    out.enc().buf.extend_from_slice(&reply);
                    return Ok(());
                }
                let start = out.len();
                let cacheable = compound::run(self, ctx, args, out)?;
                if cacheable {
                    if let Some(bytes) = out.bytes_since(start) {
                        self.replies.insert(key, Arc::new(bytes));
                    }
                }
                Ok(())
            }
            _ => Err(AcceptError::ProcUnavail),
        }
    }
}
