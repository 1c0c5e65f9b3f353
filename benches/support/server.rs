//! The server the benchmarks measure: in-process, on a runtime the bench
//! owns, with storage on the real disk.

use std::sync::Arc;

use markbase_nfs::config::Config;
use markbase_nfs::serve::{dispatcher_for, listen_addr, open_export};

/// A runtime as `serve` builds it: two workers, the blocking pool as small
/// as in production.
#[allow(dead_code)] // not every bench builds its own runtime
pub fn serve_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(Config::default().server.blocking_threads)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts an in-process server on `rt` and returns its address.
pub fn start_server(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    tune: impl FnOnce(&mut Config),
) -> (std::net::SocketAddr, Arc<markbase_nfs::nfs4::Nfs4Server>) {
    std::fs::create_dir_all(dir).unwrap();
    let mut cfg = Config::default();
    cfg.export.db = dir.join("bench.sqlite");
    cfg.server.port = 0;
    tune(&mut cfg);
    let nfs = open_export(&cfg).expect("open export");
    let listener = rt
        .block_on(async { markbase_nfs::net::bind(listen_addr(&cfg).unwrap(), &cfg.network) })
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(markbase_nfs::net::serve(
        listener,
        dispatcher_for(nfs.clone()),
        cfg.network.clone(),
    ));
    (addr, nfs)
}
