//! One export as NFSv4 operations see it: its catalog, content files and
//! handles, with NFSv4's error codes, and the state table every export
//! shares, keyed so two catalogs' file ids never meet in it.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use super::consts::Status;
use super::state::State;
use crate::catalog::{fnv1a, Catalog, CatalogError, Node, NodeId};
use crate::config::Config;
use crate::export::held_reply::AfterDurable;
use crate::export::{Export, HandleError, NodeError};
use crate::storage::{FilePool, VolumeStats};

pub(crate) struct ExportView {
    export: Arc<Export>,
    /// Opens, locks and clients of every export (one client has one lease,
    /// whatever it mounts).
    pub(crate) state: Arc<Mutex<State>>,
    /// XORed into file ids where they key the shared state: 0 for the
    /// first export (its keys are what they were with one export), a
    /// constant of the export id for the others.
    key_mix: u64,
}

impl std::fmt::Debug for ExportView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportView")
            .field("export", &self.export)
            .finish_non_exhaustive()
    }
}

impl ExportView {
    /// The view of the `index`th export; tells the export which of its
    /// files the shared state holds open.
    pub(crate) fn new(export: Arc<Export>, index: usize, state: Arc<Mutex<State>>) -> ExportView {
        let key_mix = if index == 0 {
            0
        } else {
            fnv1a(&export.config().export.export_id.to_be_bytes()) | 1 << 63
        };
        let opens = state.clone();
        export.set_open_check(Box::new(move |fileid| {
            opens.lock().is_open(fileid ^ key_mix)
        }));
        ExportView {
            export,
            state,
            key_mix,
        }
    }

    /// The key of `node` in the shared state (opens, locks).
    pub(crate) fn state_key(&self, node: &Node) -> u64 {
        node.fileid ^ self.key_mix
    }

    /// The file id a state key was made from.
    pub(crate) fn fileid_of_key(&self, key: u64) -> u64 {
        key ^ self.key_mix
    }

    pub(crate) fn export(&self) -> &Arc<Export> {
        &self.export
    }

    pub(crate) fn config(&self) -> &Config {
        self.export.config()
    }

    pub(crate) fn catalog(&self) -> &Catalog {
        self.export.catalog()
    }

    pub(crate) fn files(&self) -> &FilePool {
        self.export.files()
    }

    pub(crate) fn write_verifier(&self) -> [u8; 8] {
        self.export.write_verifier()
    }

    pub(crate) fn content_path_for(&self, id: &NodeId) -> PathBuf {
        self.export.content_path_for(id)
    }

    /// Discards a removed node's content (`Export::discard_content_later`).
    pub(crate) fn discard_content_later(&self, node: Arc<Node>) -> Option<AfterDurable> {
        self.export.discard_content_later(node)
    }

    /// Whether closing the file keyed `key` would remove its content.
    pub(crate) fn content_goes_with_last_close(&self, key: u64) -> bool {
        self.export
            .content_goes_with_last_close(self.fileid_of_key(key))
    }

    /// Called after a CLOSE of the file keyed `key`: removes content whose
    /// node is gone.
    pub(crate) fn closed(&self, key: u64) {
        self.export.closed(self.fileid_of_key(key))
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

    pub(crate) fn link_count(&self, node: &Node) -> u32 {
        self.export.link_count(node)
    }

    pub(crate) fn volume_stats(&self) -> VolumeStats {
        self.export.volume_stats()
    }

    pub(crate) fn report_missing(&self, node: &Node, err: &std::io::Error) {
        self.export.report_missing(node, err)
    }
}

pub(crate) fn handle_status(e: HandleError) -> Status {
    match e {
        HandleError::BadHandle => Status::BadHandle,
        HandleError::Stale => Status::Stale,
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
        // Never sent: the call is run again where it may load.
        CatalogError::NotInMemory(_) => Status::Delay,
        CatalogError::Sql { .. } | CatalogError::Commit(_) => {
            tracing::error!(error = %e, "catalog error");
            Status::ServerFault
        }
    }
}
