//! The export's permission rules (`crate::export::permission`) in NFSv4's
//! terms: a refusal is NFS4ERR_ACCESS, or NFS4ERR_PERM where only the owner
//! may.

use super::consts::Status;
use super::view::ExportView;
use crate::catalog::Node;
use crate::export::permission::{self as rules, Denied};
use crate::rpc::Credentials;

pub use rules::{EXECUTE, READ, WRITE};

fn status(d: Denied) -> Status {
    match d {
        Denied::Access => Status::Access,
        Denied::Perm => Status::Perm,
    }
}

pub fn effective_uid(srv: &ExportView, cred: &Credentials) -> u32 {
    rules::effective_uid(srv.export(), cred)
}

pub fn creator(srv: &ExportView, cred: &Credentials) -> (Option<String>, Option<String>) {
    rules::creator(srv.export(), cred)
}

pub fn rights(srv: &ExportView, node: &Node, cred: &Credentials) -> u32 {
    rules::rights(srv.export(), node, cred)
}

pub fn require(srv: &ExportView, node: &Node, cred: &Credentials, want: u32) -> Result<(), Status> {
    rules::require(srv.export(), node, cred, want).map_err(status)
}

pub fn require_owner(srv: &ExportView, node: &Node, cred: &Credentials) -> Result<(), Status> {
    rules::require_owner(srv.export(), node, cred).map_err(status)
}
