//! File handles: they name a node (export id + node id), never a place in
//! memory, so a handle a client holds stays valid across server restarts
//! (fh_expire_type = FH4_PERSISTENT).
//!
//! Layout: `"MB" | version 1 | kind | export_id u32 BE | id bytes`, where kind
//! is 0 (root, no id), 1 (integer id, 8 bytes BE), 2 (text id, UTF-8) or
//! 3 (a text id too long for a handle: its first bytes, then the FNV-1a
//! hash of the whole id, 8 bytes BE; the catalog finds the one id that has
//! both). Every node thus has a handle within NFS4_FHSIZE, whatever its id.

use std::sync::Arc;

use super::consts::{Status, NFS4_FHSIZE};
use crate::catalog::{fnv1a, NodeId};

const MAGIC: &[u8; 2] = b"MB";
const VERSION: u8 = 1;
const HEADER: usize = 8;
const KIND_ROOT: u8 = 0;
const KIND_INT: u8 = 1;
const KIND_TEXT: u8 = 2;
const KIND_TEXT_HASHED: u8 = 3;
/// Bytes of a long text id kept in its handle (the rest is the hash).
const HASHED_PREFIX: usize = NFS4_FHSIZE - HEADER - 8;

/// What a handle names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleId {
    /// The node's id itself.
    Id(NodeId),
    /// A text id too long to carry: its first bytes and its hash.
    Hashed { prefix: String, hash: u64 },
}

/// Encodes the handle of `id` in export `export_id`.
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
        NodeId::Text(s) if HEADER + s.len() <= NFS4_FHSIZE => {
            fh[kind_at] = KIND_TEXT;
            fh.extend_from_slice(s.as_bytes());
        }
        NodeId::Text(s) => {
            fh[kind_at] = KIND_TEXT_HASHED;
            fh.extend_from_slice(hashed_prefix(s).as_bytes());
            fh.extend_from_slice(&fnv1a(s.as_bytes()).to_be_bytes());
        }
    }
    Ok(fh)
}

/// The first bytes of a long id that its handle keeps (cut at a character
/// boundary, so the prefix is text the catalog can search by).
pub fn hashed_prefix(id: &str) -> &str {
    let mut cut = id.len().min(HASHED_PREFIX);
    while !id.is_char_boundary(cut) {
        cut -= 1;
    }
    &id[..cut]
}

/// Decodes a handle: BADHANDLE if it is not one of ours, STALE if it is
/// ours but for another export.
pub fn decode(export_id: u32, fh: &[u8]) -> Result<HandleId, Status> {
    if fh.len() < HEADER || &fh[..2] != MAGIC || fh[2] != VERSION {
        return Err(Status::BadHandle);
    }
    let export = u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]);
    let body = &fh[HEADER..];
    let id = match fh[3] {
        KIND_ROOT if body.is_empty() => HandleId::Id(NodeId::Root),
        KIND_INT if body.len() == 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(body);
            HandleId::Id(NodeId::Int(i64::from_be_bytes(b)))
        }
        KIND_TEXT if !body.is_empty() => {
            let s = std::str::from_utf8(body).map_err(|_| Status::BadHandle)?;
            HandleId::Id(NodeId::Text(Arc::from(s)))
        }
        KIND_TEXT_HASHED if body.len() > 8 => {
            let (prefix, hash) = body.split_at(body.len() - 8);
            let prefix = std::str::from_utf8(prefix).map_err(|_| Status::BadHandle)?;
            let mut h = [0u8; 8];
            h.copy_from_slice(hash);
            HandleId::Hashed {
                prefix: prefix.to_string(),
                hash: u64::from_be_bytes(h),
            }
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
            assert_eq!(decode(3, &fh).unwrap(), HandleId::Id(id));
            assert_eq!(decode(4, &fh), Err(Status::Stale));
        }
        assert_eq!(decode(3, b"garbage!"), Err(Status::BadHandle));
        assert_eq!(decode(3, &[]), Err(Status::BadHandle));
        let mut fh = encode(3, &NodeId::Int(1)).unwrap();
        fh.pop();
        assert_eq!(decode(3, &fh), Err(Status::BadHandle));
    }

    #[test]
    fn long_text_ids_get_a_hashed_handle_that_fits() {
        // One byte, then 300 of two-byte characters: the prefix is cut on a
        // character boundary, one byte short of the room.
        let long = format!("x{}", "\u{e9}".repeat(150));
        let fh = encode(3, &NodeId::text(&long)).unwrap();
        assert_eq!(fh.len(), NFS4_FHSIZE - 1);
        match decode(3, &fh).unwrap() {
            HandleId::Hashed { prefix, hash } => {
                assert!(long.starts_with(&prefix));
                assert_eq!(prefix.len(), HASHED_PREFIX - 1);
                assert_eq!(hash, fnv1a(long.as_bytes()));
            }
            other => panic!("{other:?}"),
        }
        // Exactly as long as a handle can carry: kept whole.
        let fits = "y".repeat(NFS4_FHSIZE - HEADER);
        assert_eq!(
            decode(3, &encode(3, &NodeId::text(&fits)).unwrap()).unwrap(),
            HandleId::Id(NodeId::text(&fits))
        );
    }
}
