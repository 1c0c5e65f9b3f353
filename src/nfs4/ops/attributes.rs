//! GETATTR, ACCESS, VERIFY and NVERIFY.

use crate::catalog::NodeKind;
use crate::nfs4::attrs::{self, Bitmap};
use crate::nfs4::compound::Compound;
use crate::nfs4::consts::{
    OpResult, Status, ACCESS4_DELETE, ACCESS4_EXECUTE, ACCESS4_EXTEND, ACCESS4_LOOKUP,
    ACCESS4_MODIFY, ACCESS4_READ,
};
use crate::rpc::ReplyBody;
use crate::xdr::Decoder;

pub(crate) fn getattr(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let requested = Bitmap::decode(d)?;
    let node = c.current()?;
    attrs::encode_fattr(c.srv, &node, &requested, out.enc())
}

/// The export is read-only until the write path lands: reading and
/// looking up are granted by mode bits, modifying is not.
pub(crate) fn access(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let requested = d.u32()?;
    let node = c.current()?;
    let cfg = &c.srv.config().export;
    let all = ACCESS4_READ
        | ACCESS4_LOOKUP
        | ACCESS4_MODIFY
        | ACCESS4_EXTEND
        | ACCESS4_DELETE
        | ACCESS4_EXECUTE;
    let granted = match node.kind {
        NodeKind::Folder => {
            let mut g = 0;
            if cfg.dir_mode & 0o444 != 0 {
                g |= ACCESS4_READ;
            }
            if cfg.dir_mode & 0o111 != 0 {
                g |= ACCESS4_LOOKUP;
            }
            g
        }
        NodeKind::File => {
            let mut g = 0;
            if cfg.file_mode & 0o444 != 0 {
                g |= ACCESS4_READ;
            }
            if cfg.file_mode & 0o111 != 0 {
                g |= ACCESS4_EXECUTE;
            }
            g
        }
    };
    let supported = requested & all;
    out.enc().u32(supported);
    out.enc().u32(supported & granted);
    Ok(())
}

pub(crate) fn verify(c: &mut Compound<'_>, d: &mut Decoder<'_>, negate: bool) -> OpResult {
    let node = c.current()?;
    let same = attrs::matches(c.srv, &node, d)?;
    match (same, negate) {
        (true, false) | (false, true) => Ok(()),
        (false, false) => Err(Status::NotSame),
        (true, true) => Err(Status::Same),
    }
}
