//! NFSv4.0 (RFC 7530): the COMPOUND procedure and its operations over a
//! MarkBase catalog. Speaks XDR to the RPC layer below it and calls the
//! catalog and storage layers; it never writes SQL.

pub mod attrs;
mod awaited;
mod compound;
pub mod consts;
mod idmap;
mod ops;
mod permission;
mod pseudo;
mod server;
pub mod state;
#[cfg(test)]
mod tests;
mod view;

pub use server::Nfs4Server;
