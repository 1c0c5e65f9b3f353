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

use crate::catalog::{fnv1a, NodeId};

/// Largest NFSv4 file handle (NFS4_FHSIZE, RFC 7530).
pub const NFS4_FHSIZE: usize = 128;
/// Largest NFSv3 file handle (NFS3_FHSIZE, RFC 1813): a text id too long
/// for it is carried hashed with a shorter prefix, a handle that names the
/// same node as the NFSv4 one.
pub const NFS3_FHSIZE: usize = 64;

/// Why a handle names no node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleError {
    /// Not one of ours (NFS4ERR_BADHANDLE, NFS3ERR_BADHANDLE).
    BadHandle,
    /// Ours, but for another export, or its node is gone (…_STALE).
    Stale,
}

const MAGIC: &[u8; 2] = b"MB";
const VERSION: u8 = 1;
const HEADER: usize = 8;
const KIND_ROOT: u8 = 0;
const KIND_INT: u8 = 1;
const KIND_TEXT: u8 = 2;
const KIND_TEXT_HASHED: u8 = 3;
/// The NFSv4 pseudo-root of a server with several exports (no export, no
/// node).
const KIND_PSEUDO_ROOT: u8 = 4;
/// Bytes of a long text id kept in an NFSv4 handle (the rest is the hash).
#[cfg(test)]
const HASHED_PREFIX: usize = NFS4_FHSIZE - HEADER - 8;

/// What a handle names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleId {
    /// The node's id itself.
    Id(NodeId),
    /// A text id too long to carry: its first bytes and its hash.
    Hashed { prefix: String, hash: u64 },
}

/// Encodes the NFSv4 handle of `id` in export `export_id`.
pub fn encode(export_id: u32, id: &NodeId) -> Result<Vec<u8>, HandleError> {
    encode_within(export_id, id, NFS4_FHSIZE)
}

/// Encodes the handle of `id`, at most `limit` bytes long (a long text id
/// is hashed to fit).
pub fn encode_within(export_id: u32, id: &NodeId, limit: usize) -> Result<Vec<u8>, HandleError> {
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
        NodeId::Text(s) if HEADER + s.len() <= limit => {
            fh[kind_at] = KIND_TEXT;
            fh.extend_from_slice(s.as_bytes());
        }
        NodeId::Text(s) => {
            fh[kind_at] = KIND_TEXT_HASHED;
            fh.extend_from_slice(hashed_prefix(s, limit - HEADER - 8).as_bytes());
            fh.extend_from_slice(&fnv1a(s.as_bytes()).to_be_bytes());
        }
    }
    Ok(fh)
}

/// The handle of the NFSv4 pseudo-root (listing the exports).
pub fn pseudo_root() -> Vec<u8> {
    let mut fh = Vec::with_capacity(HEADER);
    fh.extend_from_slice(MAGIC);
    fh.push(VERSION);
    fh.push(KIND_PSEUDO_ROOT);
    fh.extend_from_slice(&0u32.to_be_bytes());
    fh
}

/// Whom a handle of ours belongs to: the pseudo-root, or an export (by
/// id; its node is decoded by that export). BADHANDLE if it is not ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    PseudoRoot,
    Export(u32),
}

/// The owner of a handle, from its header alone.
pub fn owner_of(fh: &[u8]) -> Result<Owner, HandleError> {
    if fh.len() < HEADER || &fh[..2] != MAGIC || fh[2] != VERSION {
        return Err(HandleError::BadHandle);
    }
    if fh[3] == KIND_PSEUDO_ROOT {
        return if fh.len() == HEADER {
            Ok(Owner::PseudoRoot)
        } else {
            Err(HandleError::BadHandle)
        };
    }
    Ok(Owner::Export(u32::from_be_bytes([
        fh[4], fh[5], fh[6], fh[7],
    ])))
}

/// The first bytes of a long id that its handle keeps (cut at a character
/// boundary, so the prefix is text the catalog can search by).
pub fn hashed_prefix(id: &str, room: usize) -> &str {
    let mut cut = id.len().min(room);
    while !id.is_char_boundary(cut) {
        cut -= 1;
    }
    &id[..cut]
}

/// Decodes a handle: BADHANDLE if it is not one of ours, STALE if it is
/// ours but for another export.
pub fn decode(export_id: u32, fh: &[u8]) -> Result<HandleId, HandleError> {
    if fh.len() < HEADER || &fh[..2] != MAGIC || fh[2] != VERSION {
        return Err(HandleError::BadHandle);
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
            let s = std::str::from_utf8(body).map_err(|_| HandleError::BadHandle)?;
            HandleId::Id(NodeId::Text(Arc::from(s)))
        }
        KIND_TEXT_HASHED if body.len() > 8 => {
            let (prefix, hash) = body.split_at(body.len() - 8);
            let prefix = std::str::from_utf8(prefix).map_err(|_| HandleError::BadHandle)?;
            let mut h = [0u8; 8];
            h.copy_from_slice(hash);
            HandleId::Hashed {
                prefix: prefix.to_string(),
                hash: u64::from_be_bytes(h),
            }
        }
        _ => return Err(HandleError::BadHandle),
    };
    if export != export_id {
        return Err(HandleError::Stale);
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
            assert_eq!(decode(4, &fh), Err(HandleError::Stale));
        }
        assert_eq!(decode(3, b"garbage!"), Err(HandleError::BadHandle));
        assert_eq!(decode(3, &[]), Err(HandleError::BadHandle));
        let mut fh = encode(3, &NodeId::Int(1)).unwrap();
        fh.pop();
        assert_eq!(decode(3, &fh), Err(HandleError::BadHandle));
    }

    #[test]
    fn the_pseudo_root_handle_is_told_from_export_handles() {
        let root = pseudo_root();
        assert_eq!(owner_of(&root), Ok(Owner::PseudoRoot));
        assert_eq!(decode(0, &root), Err(HandleError::BadHandle));
        let fh = encode(7, &NodeId::Int(9)).unwrap();
        assert_eq!(owner_of(&fh), Ok(Owner::Export(7)));
        let mut longer = root.clone();
        longer.push(0);
        assert_eq!(owner_of(&longer), Err(HandleError::BadHandle));
        assert_eq!(owner_of(b"MB"), Err(HandleError::BadHandle));
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

    #[test]
    fn nfsv3_handles_fit_64_bytes_and_name_the_same_node() {
        let uuid = NodeId::text("0b7e4f1c-9a2d-4c3b-8e5f-1a2b3c4d5e6f");
        // Short ids: the very same handle for both versions.
        assert_eq!(
            encode_within(3, &uuid, NFS3_FHSIZE).unwrap(),
            encode(3, &uuid).unwrap()
        );
        let long = "z".repeat(100);
        let v3 = encode_within(3, &NodeId::text(&long), NFS3_FHSIZE).unwrap();
        assert!(v3.len() <= NFS3_FHSIZE);
        match decode(3, &v3).unwrap() {
            HandleId::Hashed { prefix, hash } => {
                assert!(long.starts_with(&prefix));
                assert_eq!(hash, fnv1a(long.as_bytes()));
            }
            other => panic!("{other:?}"),
        }
    }
}
