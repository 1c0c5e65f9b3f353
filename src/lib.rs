//! MarkBase NFS: a throughput-first NFSv4.0 and NFSv3 server for MarkBase
//! catalogs.
//!
//! Layers, each knowing only the one below it:
//! `net` (sockets, pipelining) → `rpc` (ONC RPC) → `nfs4` (COMPOUND and its
//! operations), `nfs3` and `mount` (NFSv3 and its MOUNT protocol) →
//! `export` (one catalog with its content and file handles, shared by the
//! protocols) → `catalog` (SQLite + caches) and `storage` (content files).
//! Beside them: `serve` (wiring), `config`, `metrics` (the Prometheus
//! endpoint), and apart, `tools`: the client and stream runner that drive
//! and measure the server.

pub mod catalog;
pub mod config;
pub mod export;
pub mod metrics;
pub mod mount;
pub mod net;
pub mod nfs3;
pub mod nfs4;
pub mod pipe;
pub mod rpc;
pub mod serve;
pub mod storage;
pub mod tools;
pub mod xdr;
