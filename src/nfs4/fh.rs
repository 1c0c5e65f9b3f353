//! File handles: they name a node (export id + node id), never a place in
//! memory, so a handle a client holds stays valid across server restarts
//! (fh_expire_type = FH4_PERSISTENT).
//!
//! Layout: `"MB" | version 1 | kind | export_id u32 BE | id bytes`, where kind
//! is 0 (root, no id), 1 (integer id, 8 bytes BE) or 2 (text id, UTF-8).

use std::sync::Arc;

use super::consts::{Status, NFS4_FHSIZE};
use crate::catalog::NodeId;

const MAGIC: &[u8; 2] = b"MB";
const VERSION: u8 = 1;
const HEADER: usize = 8;
const KIND_ROOT: u8 = 0;
const KIND_INT: u8 = 1;
const KIND_TEXT: u8 = 2;

/// Encodes the handle of `id` in export `export_id`. Text ids longer than
/// a handle can carry are refused (the catalog's ids are UUID-sized).
pub fn encode(export_id: u32, id: &NodeId) -> Result<Vec<u8>, Status> {
    let mut fh = Vec::with_capacity(HEADER + 40);
    fh.extend_from_slice(MAGIC);
    fh.push(VERSION);
    let kind_at = fh.len();
    fh.push(KIND_ROOT);
    fh.extend_from_slice(&export_id.to_be_bytes());
    match id {
        NodeId::Root => {}
        NodeId::Int(i) => {
            fh[kind_at] = KIND_INT;
            fh.extend_from_slice(&i.to_be_bytes());
        }
        NodeId::Text(s) => {
            if HEADER + s.len() > NFS4_FHSIZE {
                tracing::error!(node = %id, "node id is too long for an NFSv4 file handle");
                return Err(Status::ServerFault);
            }
            fh[kind_at] = KIND_TEXT;
            fh.extend_from_slice(s.as_bytes());
        }
    }
    Ok(fh)
}

/// Decodes a handle: BADHANDLE if it is not one of ours, STALE if it is
/// ours but for another export.
pub fn decode(export_id: u32, fh: &[u8]) -> Result<NodeId, Status> {
    if fh.len() < HEADER || &fh[..2] != MAGIC || fh[2] != VERSION {
        return Err(Status::BadHandle);
    }
    let export = u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]);
    let body = &fh[HEADER..];
    let id = match fh[3] {
        KIND_ROOT if body.is_empty() => NodeId::Root,
        KIND_INT if body.len() == 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(body);
            NodeId::Int(i64::from_be_bytes(b))
        }
        KIND_TEXT if !body.is_empty() => {
            let s = std::str::from_utf8(body).map_err(|_| Status::BadHandle)?;
            NodeId::Text(Arc::from(s))
        }
        _ => return Err(Status::BadHandle),
    };
    if export != export_id {
        return Err(Status::Stale);
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_reject_garbage() {
        for id in [NodeId::Root, NodeId::Int(-5), NodeId::text("0b7e-uuid")] {
            let fh = encode(3, &id).unwrap();
            assert!(fh.len() <= NFS4_FHSIZE);
            assert_eq!(decode(3, &fh).unwrap(), id);
            assert_eq!(decode(4, &fh), Err(Status::Stale));
        }
        assert_eq!(decode(3, b"garbage!"), Err(Status::BadHandle));
        assert_eq!(decode(3, &[]), Err(Status::BadHandle));
        let mut fh = encode(3, &NodeId::Int(1)).unwrap();
        fh.pop();
        assert_eq!(decode(3, &fh), Err(Status::BadHandle));
        assert_eq!(
            encode(3, &NodeId::text(&"x".repeat(200))),
            Err(Status::ServerFault)
        );
    }
}
