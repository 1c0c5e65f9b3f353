//! Wiring for `markbase-nfs serve`: config → catalog → NFSv4 program →
//! RPC dispatcher → listener.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use std::time::Duration;

use crate::catalog::{create_demo, reconcile, Catalog, NameRules, WriterConfig};
use crate::config::Config;
use crate::export::{Export, Exports};
use crate::mount::MountServer;
use crate::nfs3::Nfs3Server;
use crate::nfs4::Nfs4Server;
use crate::rpc::Dispatcher;
use crate::storage::ensure_storage_dir;

/// Opens every export `cfg` lists (creating a demo catalog where one is
/// missing and `export.create_demo` is set) and the NFSv4 program over
/// them.
pub fn open_export(cfg: &Config) -> anyhow::Result<Arc<Nfs4Server>> {
    let exports = cfg
        .each_export()
        .iter()
        .map(|one| {
            open_one_export(one)
                .with_context(|| format!("opening the export at {}", one.export.path))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Arc::new(Nfs4Server::serving(Exports::new(exports))))
}

/// Opens the one export of `cfg`: its catalog reconciled with its storage
/// folder, and the catalog's change feed started.
fn open_one_export(cfg: &Config) -> anyhow::Result<Arc<Export>> {
    let storage = cfg.storage_dir();
    if cfg.export.create_demo && create_demo(&cfg.export.db, &storage)? {
        tracing::info!(db = %cfg.export.db.display(), "created the demo catalog");
    }
    anyhow::ensure!(
        cfg.export.db.exists(),
        "catalog {} does not exist (run `markbase-nfs gen` or `import`, or enable export.create_demo)",
        cfg.export.db.display()
    );
    let storage = ensure_storage_dir(&storage)
        .with_context(|| format!("creating storage folder {}", storage.display()))?;
    let catalog = Arc::new(
        Catalog::open_with(
            &cfg.export.db,
            &cfg.cache,
            WriterConfig {
                interval: Duration::from_millis(cfg.catalog.writer_interval_ms),
                max_batch: cfg.catalog.writer_max_batch,
                journal: cfg.catalog.journal,
                gather: Duration::from_millis(cfg.catalog.journal_gather_ms),
            },
        )?
        .with_name_rules(NameRules {
            case_insensitive: cfg.export.case_insensitive,
        })
        .with_root_fileid(crate::export::root_fileid(&cfg.export)),
    );
    let report = reconcile(&catalog, &storage).with_context(|| {
        format!(
            "reconciling {} with {}",
            cfg.export.db.display(),
            storage.display()
        )
    })?;
    tracing::info!(
        files = report.files_checked,
        sizes_fixed = report.sizes_fixed.len(),
        missing = report.missing.len(),
        orphans = report.orphans.len(),
        "catalog reconciled with the disk"
    );
    catalog
        .start_feed(
            Duration::from_millis(cfg.catalog.feed_poll_ms.max(1)),
            cfg.catalog.feed,
        )
        .context("starting the catalog's change feed")?;
    Ok(Arc::new(Export::new(cfg.clone(), catalog, storage)))
}

/// NFSv4, NFSv3 and MOUNT on one listener, over the same exports.
pub fn dispatcher_for(nfs: Arc<Nfs4Server>) -> Arc<Dispatcher> {
    programs(nfs).0
}

/// The dispatcher of [`dispatcher_for`], and its NFSv3 program (whose
/// figures the metrics endpoint reads).
pub fn programs(nfs: Arc<Nfs4Server>) -> (Arc<Dispatcher>, Arc<Nfs3Server>) {
    let mut d = Dispatcher::new();
    let exports = nfs.exports().clone();
    let nfs3 = Arc::new(Nfs3Server::serving(exports.clone()));
    d.register(nfs);
    d.register(nfs3.clone());
    d.register(Arc::new(MountServer::serving(exports)));
    (Arc::new(d), nfs3)
}

pub fn listen_addr(cfg: &Config) -> anyhow::Result<SocketAddr> {
    let text = format!("{}:{}", cfg.server.address, cfg.server.port);
    text.parse()
        .or_else(|_| format!("[{}]:{}", cfg.server.address, cfg.server.port).parse())
        .with_context(|| format!("bad listen address {text}"))
}

/// The lines an editor pastes to mount the volume: the export at `/`, or
/// the first of several (the others mount the same way at their paths).
pub fn mount_help(addr: &SocketAddr, paths: &[&str]) -> String {
    let path = paths.first().copied().unwrap_or("/");
    let mut help = mount_lines(addr, path);
    if paths.len() > 1 {
        help.push_str(&format!(
            "\nExports (each mounts as above, at its own path): {}",
            paths.join(", ")
        ));
    }
    help
}

fn mount_lines(addr: &SocketAddr, path: &str) -> String {
    let host = addr.ip();
    let port = addr.port();
    // macOS mounts NFSv3 unless told vers=4, ignores a Finder URL's port,
    // and asks for 32 KiB I/O without rwsize; nfc sends names composed, as
    // the MarkBase app stores them.
    let mac_opts = format!("vers=4,port={port},rwsize=1048576,nfc");
    let url_opts = mac_opts.replace('=', ":");
    // NFSv3 finds MOUNT on the NFS port (no rpcbind); its locks stay on
    // the client (NLM is not served).
    let mac_v3 = format!("vers=3,port={port},mountport={port},rwsize=1048576,locallocks,nfc");
    format!(
        "Mount it:\n  \
         macOS: sudo mkdir -p /Volumes/MarkBase && sudo mount_nfs -o {mac_opts} {host}:{path} /Volumes/MarkBase\n  \
         Finder (Go > Connect to Server): nfs://{host}{path}?options={url_opts}\n  \
         /etc/nfs.conf (every NFS mount of that Mac): nfs.client.mount.options = {mac_opts}\n  \
         Linux: sudo mkdir -p /mnt/markbase && sudo mount -t nfs4 -o vers=4.0,port={port} {host}:{path} /mnt/markbase\n\
         Or over NFSv3:\n  \
         macOS: sudo mount_nfs -o {mac_v3} {host}:{path} /Volumes/MarkBase\n  \
         Linux: sudo mount -t nfs -o vers=3,proto=tcp,port={port},mountport={port},mountproto=tcp,nolock {host}:{path} /mnt/markbase"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finder turns `options=a:b` into `-oa=b` (NFSPlugin/NFSMount.c:
    /// NFS_Create_MountOption_From_URL) and drops the URL's own port.
    #[test]
    fn mount_help_gives_the_mac_its_lines() {
        let help = mount_help(&"127.0.0.1:11112".parse().unwrap(), &["/"]);
        assert!(help.contains(
            "mount_nfs -o vers=4,port=11112,rwsize=1048576,nfc 127.0.0.1:/ /Volumes/MarkBase"
        ));
        assert!(help.contains("nfs://127.0.0.1/?options=vers:4,port:11112,rwsize:1048576,nfc"));
        assert!(help.contains("nfs.client.mount.options = vers=4,port=11112,rwsize=1048576,nfc"));
        assert!(help.contains("mount -t nfs4 -o vers=4.0,port=11112 127.0.0.1:/ /mnt/markbase"));
        assert!(help.contains(
            "mount_nfs -o vers=3,port=11112,mountport=11112,rwsize=1048576,locallocks,nfc 127.0.0.1:/"
        ));
        assert!(help.contains(
            "mount -t nfs -o vers=3,proto=tcp,port=11112,mountport=11112,mountproto=tcp,nolock 127.0.0.1:/"
        ));
        let several = mount_help(&"10.0.0.2:2049".parse().unwrap(), &["/warren", "/accusys"]);
        assert!(several.contains("10.0.0.2:/warren /Volumes/MarkBase"));
        assert!(several.contains("nfs://10.0.0.2/warren?options=vers:4"));
        assert!(
            several.contains("Exports (each mounts as above, at its own path): /warren, /accusys")
        );
    }
}
