//! The NFSv4 program: the exports it serves (one, or several under a
//! pseudo-root), the state they share, the reply cache and the latency
//! tables.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::compound;
use super::consts::{NFS4_PROGRAM, NFS4_VERSION, PROC_COMPOUND, PROC_NULL};
use super::pseudo::PseudoRoot;
use super::state::State;
use super::view::ExportView;
use crate::catalog::{fnv1a, Catalog};
use crate::config::Config;
use crate::export::{Export, Exports};
use crate::rpc::{AcceptError, CallContext, DuplicateReplies, Program, ReplyBody};
use crate::storage::FilePool;

pub struct Nfs4Server {
    /// The exports, in the order of the tuning file; the first keeps the
    /// NFSv4 client records (reclaim after a restart).
    views: Vec<Arc<ExportView>>,
    /// Present when the exports are listed under a pseudo-root rather than
    /// one export being `/`.
    pseudo: Option<PseudoRoot>,
    /// The exports the views are of, in the same order.
    exports: Exports,
    pub(crate) state: Arc<Mutex<State>>,
    /// Duplicate request cache: replies of COMPOUNDs with non-idempotent
    /// ops, so a retransmission after a reconnect gets the original answer
    /// instead of a spurious NOENT/EXIST.
    pub(super) replies: DuplicateReplies,
    pub(crate) latency: crate::metrics::ops::OpLatency,
    started: Instant,
    /// Milliseconds after `started` when the next lease sweep is due.
    next_sweep_ms: AtomicU64,
}

impl std::fmt::Debug for Nfs4Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nfs4Server")
            .field("exports", &self.views)
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

/// The clients the previous run recorded, which may reclaim in the grace
/// period. The first export's catalog keeps them, but the exports may have
/// changed since (a user added under `serve --users` whose name sorts
/// first): records found in another export's catalog are read too and
/// moved to the first, so none is lost and none lingers.
fn recorded_clients(exports: &Exports) -> HashSet<Vec<u8>> {
    let first = exports[0].catalog();
    let mut all = HashSet::new();
    for (i, export) in exports.iter().enumerate() {
        let ids = match export.catalog().nfs_clients() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(export = %export.path(), error = %e, "cannot read the NFS client list: its clients cannot reclaim");
                continue;
            }
        };
        if i > 0 && !ids.is_empty() {
            // Kept by the first export (committed) before this one forgets
            // them: a crash in between leaves them in both, read as one.
            let mut moved = Vec::new();
            for id in &ids {
                match first.record_nfs_client(id).wait() {
                    Ok(()) => moved.push(id.clone()),
                    Err(e) => {
                        tracing::error!(export = %export.path(), error = %e, "cannot move an NFS client record to the first export; it stays")
                    }
                }
            }
            tracing::info!(export = %export.path(), clients = moved.len(), "NFS client records moved to the first export");
            export.catalog().forget_nfs_clients(moved);
        }
        all.extend(ids);
    }
    all
}

impl Nfs4Server {
    /// Every export of the server (at least one): one at `/`, or several
    /// under a pseudo-root (see [`crate::config::ExportTables`]).
    pub fn serving(exports: Exports) -> Nfs4Server {
        let first = exports[0].clone();
        let config = first.config();
        let lease = Duration::from_secs(config.nfs.lease_time as u64);
        let boot = boot_instance();
        let reclaimable = recorded_clients(&exports);
        if !reclaimable.is_empty() {
            tracing::info!(
                clients = reclaimable.len(),
                seconds = config.nfs.grace_time,
                "grace period: clients of the previous run may reclaim their state"
            );
        }
        let grace = Duration::from_secs(config.nfs.grace_time as u64);
        // Every export keeps the boot instances, so a stateid of an earlier
        // run reads as STALE (the client recovers) whichever export is
        // first in the next run, not as BAD (an I/O error).
        let mut earlier_boots = HashSet::new();
        for export in exports.iter() {
            match export.catalog().record_boot(boot) {
                Ok(boots) => earlier_boots.extend(boots),
                Err(e) => {
                    tracing::error!(export = %export.path(), error = %e, "cannot record the boot instance: earlier runs' stateids may read as BAD, not STALE")
                }
            }
        }
        let state = State::new(boot, lease, grace, reclaimable, Instant::now())
            .with_courtesy(Duration::from_secs(config.nfs.courtesy_time))
            .with_earlier_boots(earlier_boots);
        let state = Arc::new(Mutex::new(state));
        let reply_cache_entries = config.nfs.reply_cache_entries.max(1);
        let pseudo_root = exports.has_pseudo_root();
        let views: Vec<Arc<ExportView>> = exports
            .iter()
            .enumerate()
            .map(|(i, e)| Arc::new(ExportView::new(e.clone(), i, state.clone())))
            .collect();
        let pseudo = pseudo_root.then(|| PseudoRoot::new(&views));
        Nfs4Server {
            latency: crate::metrics::ops::OpLatency::new(40, super::consts::op_name),
            started: Instant::now(),
            next_sweep_ms: AtomicU64::new(0),
            replies: DuplicateReplies::new(reply_cache_entries),
            state,
            views,
            pseudo,
            exports,
        }
    }

    /// The first export (shared with NFSv3 and MOUNT); the only one unless
    /// the tuning file lists several.
    pub fn export(&self) -> &Arc<Export> {
        self.views[0].export()
    }

    /// Every export, in the tuning file's order.
    pub fn exports(&self) -> &Exports {
        &self.exports
    }

    pub(crate) fn primary(&self) -> &ExportView {
        &self.views[0]
    }

    /// The export whose id a handle carries.
    pub(crate) fn view_with_id(&self, export_id: u32) -> Option<&ExportView> {
        self.exports.index_of_id(export_id).map(|i| &*self.views[i])
    }

    pub(crate) fn view(&self, index: usize) -> Option<&ExportView> {
        self.views.get(index).map(|v| &**v)
    }

    /// Whether any export serves `peer`; one refusal is logged if none
    /// does.
    pub(crate) fn admits(&self, peer: Option<std::net::SocketAddr>) -> bool {
        if self.views.len() > 1 && self.views.iter().any(|v| v.export().serves(peer)) {
            return true;
        }
        self.primary().export().admit(peer).is_ok()
    }

    pub(crate) fn pseudo_root(&self) -> Option<&PseudoRoot> {
        self.pseudo.as_ref()
    }

    pub fn config(&self) -> &Config {
        self.export().config()
    }

    pub fn catalog(&self) -> &Catalog {
        self.export().catalog()
    }

    pub fn files(&self) -> &FilePool {
        self.export().files()
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

    /// A GETATTR's fattr4 of `node` of the first export, as `viewer` is
    /// shown it (what the codec bench times).
    pub fn encode_attributes(
        &self,
        node: &crate::catalog::Node,
        viewer: super::attrs::Viewer,
        requested: &super::attrs::Bitmap,
        e: &mut crate::xdr::Encoder,
    ) -> Result<(), super::consts::Status> {
        super::attrs::encode_fattr(self.primary(), node, viewer, requested, e)
    }

    /// Per-operation latency table (p50/p99/max).
    pub fn latency_report(&self) -> String {
        self.latency.report()
    }

    pub fn write_verifier(&self) -> [u8; 8] {
        self.export().write_verifier()
    }

    pub fn storage_dir(&self) -> &std::path::Path {
        self.export().storage_dir()
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

    fn may_run_in_place(&self, version: u32, procedure: u32) -> bool {
        // Each operation is judged as the COMPOUND runs (`ops::runs_in_place`).
        version == NFS4_VERSION && matches!(procedure, PROC_NULL | PROC_COMPOUND)
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
                if !ctx.in_place {
                    // Expiring leases may write the catalog.
                    self.sweep();
                }
                // The key hashes only the head of the arguments: cached
                // COMPOUNDs (CREATE, REMOVE, RENAME, LINK) are small, and
                // hashing a 1 MiB WRITE on every call would cost more than
                // the WRITE itself.
                let head = &args[..args.len().min(512)];
                let key = (
                    ctx.caller_key(),
                    ctx.xid,
                    fnv1a(head) ^ (args.len() as u64).rotate_left(32),
                );
                if let Some(earlier) = self.replies.earlier(&key) {
                    earlier.answer(out);
                    return Ok(());
                }
                let start = out.len();
                if let Some(claim) = compound::run(self, ctx, args, out, key)? {
                    claim.finish(out, start);
                }
                Ok(())
            }
            _ => Err(AcceptError::ProcUnavail),
        }
    }
}
