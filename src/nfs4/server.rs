//! The NFSv4 program: the export it serves and the state it keeps.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::compound;
use super::consts::{Status, NFS4_PROGRAM, NFS4_VERSION, PROC_COMPOUND, PROC_NULL};
use super::state::State;
use crate::catalog::{fnv1a, Catalog, CatalogError, Node, NodeId};
use crate::config::Config;
use crate::export::{Export, HandleError, NodeError};
use crate::rpc::{AcceptError, CallContext, Program, ReplyBody};
use crate::storage::{FilePool, VolumeStats};

pub struct Nfs4Server {
    export: Arc<Export>,
    pub(crate) state: Arc<Mutex<State>>,
    /// Duplicate request cache: replies of COMPOUNDs with non-idempotent
    /// ops, so a retransmission after a reconnect gets the original answer
    /// instead of a spurious NOENT/EXIST.
    replies: moka::sync::Cache<(String, u32, u64), Arc<Vec<u8>>>,
    pub(crate) latency: crate::metrics::ops::OpLatency,
    started: Instant,
    /// Milliseconds after `started` when the next lease sweep is due.
    next_sweep_ms: AtomicU64,
}

impl std::fmt::Debug for Nfs4Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nfs4Server")
            .field("export", &self.export)
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
    pub fn new(export: Arc<Export>) -> Nfs4Server {
        let config = export.config();
        let catalog = export.catalog();
        let lease = Duration::from_secs(config.nfs.lease_time as u64);
        let boot = boot_instance();
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
        let state = Arc::new(Mutex::new(state));
        let reply_cache_entries = config.nfs.reply_cache_entries.max(1);
        let opens = state.clone();
        export.set_open_check(Box::new(move |fileid| opens.lock().is_open(fileid)));
        Nfs4Server {
            latency: crate::metrics::ops::OpLatency::new(40, super::consts::op_name),
            started: Instant::now(),
            next_sweep_ms: AtomicU64::new(0),
            replies: moka::sync::Cache::builder()
                .max_capacity(reply_cache_entries)
                .time_to_live(Duration::from_secs(300))
                .build(),
            state,
            export,
        }
    }

    /// The export this program serves (shared with NFSv3 and MOUNT).
    pub fn export(&self) -> &Arc<Export> {
        &self.export
    }

    pub fn config(&self) -> &Config {
        self.export.config()
    }

    pub fn catalog(&self) -> &Catalog {
        self.export.catalog()
    }

    pub fn files(&self) -> &FilePool {
        self.export.files()
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
            self.catalog().forget_nfs_clients(gone);
        }
    }

    /// Per-operation latency table (p50/p99/max).
    pub fn latency_report(&self) -> String {
        self.latency.report()
    }

    pub fn write_verifier(&self) -> [u8; 8] {
        self.export.write_verifier()
    }

    pub fn storage_dir(&self) -> &std::path::Path {
        self.export.storage_dir()
    }

    pub(crate) fn content_path_for(&self, id: &NodeId) -> PathBuf {
        self.export.content_path_for(id)
    }

    pub(crate) fn discard_content(&self, node: &Node) {
        self.export.discard_content(node)
    }

    /// Called after a CLOSE: removes content whose node is gone.
    pub(crate) fn closed(&self, fileid: u64) {
        self.export.closed(fileid)
    }

    pub(crate) fn handle_of(&self, node: &Node) -> Result<Vec<u8>, Status> {
        self.export.handle_of(node).map_err(handle_status)
    }

    /// The node a file handle names.
    pub(crate) fn node_of_handle(&self, handle: &[u8]) -> Result<Arc<Node>, Status> {
        self.export.node_of_handle(handle).map_err(|e| match e {
            NodeError::Handle(h) => handle_status(h),
            NodeError::Catalog(c) => catalog_status(&c),
        })
    }

    pub(crate) fn node(&self, id: &NodeId) -> Result<Arc<Node>, Status> {
        self.catalog().node(id).map_err(|e| catalog_status(&e))
    }

    pub(crate) fn subfolder_count(&self, dir: &Node) -> u32 {
        self.export.subfolder_count(dir)
    }

    pub(crate) fn volume_stats(&self) -> VolumeStats {
        self.export.volume_stats()
    }

    pub(crate) fn report_missing(&self, node: &Node, err: &std::io::Error) {
        self.export.report_missing(node, err)
    }
}

fn handle_status(e: HandleError) -> Status {
    match e {
        HandleError::BadHandle => Status::BadHandle,
        HandleError::Stale => Status::Stale,
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
        compound::locate_write_data(args_head, self.config().nfs.max_write as usize)
    }

    fn is_data_call(&self, version: u32, procedure: u32, args_head: &[u8]) -> bool {
        version == NFS4_VERSION && procedure == PROC_COMPOUND && compound::moves_data(args_head)
    }

    fn reply_data_hint(&self, version: u32, procedure: u32, args_head: &[u8]) -> u32 {
        if version != NFS4_VERSION || procedure != PROC_COMPOUND {
            return 0;
        }
        compound::read_count(args_head).map_or(0, |c| c.min(self.config().nfs.max_read))
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
