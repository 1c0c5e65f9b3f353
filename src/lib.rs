//! MarkBase NFS: a throughput-first NFSv4.0 server for MarkBase catalogs.
//!
//! Layers, each knowing only the one below it:
//! `net` (sockets, pipelining) → `rpc` (ONC RPC) → `nfs4` (COMPOUND and its
//! operations) → `catalog` (SQLite + caches) and `storage` (content files).

pub mod aja;
pub mod catalog;
pub mod client;
pub mod config;
pub mod net;
pub mod nfs4;
pub mod pipe;
pub mod rpc;
pub mod serve;
pub mod stalls;
pub mod storage;
pub mod xdr;
