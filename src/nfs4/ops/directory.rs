//! READDIR, SECINFO and READLINK.

use super::component;
use crate::catalog::{ListingCursor, NodeKind};
use crate::nfs4::attrs::{self, Bitmap};
use crate::nfs4::compound::Compound;
use crate::nfs4::consts::{OpResult, Status, AUTH_NONE, AUTH_SYS};
use crate::nfs4::permission;
use crate::nfs4::view::catalog_status;
use crate::rpc::ReplyBody;
use crate::xdr::Decoder;

/// Bytes of READDIR4resok besides the entries: verifier, end-of-list
/// marker, eof flag.
pub(crate) const READDIR_FIXED: usize = 8 + 4 + 4;

/// Cookies are derived from the entries themselves (see
/// `catalog::Listing`), so a cookie stays valid while the folder changes;
/// the cookie verifier is always zero and any verifier is accepted.
pub(crate) fn readdir(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let cookie = d.u64()?;
    let _cookieverf = d.fixed(8)?;
    let _dircount = d.u32()?;
    let maxcount = d.u32()? as usize;
    let requested = Bitmap::decode(d)?;
    let dir = c.current()?;
    if dir.kind != NodeKind::Folder {
        return Err(Status::NotDir);
    }
    if cookie == 1 || cookie == 2 {
        return Err(Status::BadCookie);
    }
    permission::require(c.srv, &dir, &c.ctx.credentials, permission::READ)?;
    // Not even room for the verifier, end of list and eof: TOOSMALL, also
    // where there is no entry to return (RFC 7530 §16.24.4).
    if maxcount < READDIR_FIXED {
        return Err(Status::TooSmall);
    }
    let listing = c
        .srv
        .catalog()
        .listing(&dir.id)
        .map_err(|e| catalog_status(&e))?;
    let viewer = c.viewer();
    let srv = c.srv;
    put_listing(
        out,
        maxcount,
        // Not under the listing's lock: an entry's attributes may load a
        // child folder's listing (see `ListingCursor`).
        ListingCursor::new(listing, cookie),
        |(entry_cookie, entry), e| {
            // An entry removed since the listing was read is skipped.
            let Ok(node) = srv.node(&entry.id) else {
                return Ok(false);
            };
            e.bool(true);
            e.u64(entry_cookie);
            e.string(&entry.name);
            attrs::encode_fattr(srv, &node, viewer, &requested, e)?;
            Ok(true)
        },
    )
}

/// Writes a READDIR4resok after its checks: the (zero) cookie verifier,
/// the entries that fit in `maxcount` bytes, the end of the list and the
/// eof flag. `put` encodes one entry (value_follows, cookie, name,
/// attributes), or nothing and false for one to skip. TOOSMALL when not
/// even one entry fits.
pub(crate) fn put_listing<T>(
    out: &mut ReplyBody,
    maxcount: usize,
    entries: impl IntoIterator<Item = T>,
    mut put: impl FnMut(T, &mut crate::xdr::Encoder) -> OpResult<bool>,
) -> OpResult {
    out.enc().fixed(&[0u8; 8]);
    let budget_end = out.len() - 8 + maxcount.saturating_sub(READDIR_FIXED - 8);
    let mut written = 0;
    let mut eof = true;
    for entry in entries {
        let mark = out.len();
        if !put(entry, out.enc())? {
            continue;
        }
        if out.len() > budget_end {
            out.truncate(mark);
            eof = false;
            break;
        }
        written += 1;
    }
    if written == 0 && !eof {
        return Err(Status::TooSmall);
    }
    out.enc().bool(false);
    out.enc().bool(eof);
    Ok(())
}

/// A symlink's target, as it was given at CREATE; INVAL for anything else
/// (RFC 7530 §16.25.5).
pub(crate) fn readlink(c: &mut Compound<'_>, out: &mut ReplyBody) -> OpResult {
    let node = c.current()?;
    if node.kind != NodeKind::Symlink {
        return Err(Status::Inval);
    }
    let m = node.meta();
    out.enc()
        .opaque(m.special.as_ref().map_or(&[][..], |s| &s.target));
    Ok(())
}

/// AUTH_SYS and AUTH_NONE for every name; the current filehandle is
/// consumed (RFC 7530 §16.31.4).
pub(crate) fn secinfo(c: &mut Compound<'_>, d: &mut Decoder<'_>, out: &mut ReplyBody) -> OpResult {
    let dir = c.current()?;
    let name = component(d)?;
    if dir.kind != NodeKind::Folder {
        return Err(Status::NotDir);
    }
    c.srv
        .catalog()
        .lookup(&dir.id, name)
        .map_err(|e| catalog_status(&e))?
        .ok_or(Status::NoEnt)?;
    c.current = None;
    put_flavors(out);
    Ok(())
}

/// SECINFO's answer for every name this server serves: AUTH_SYS, then
/// AUTH_NONE.
pub(crate) fn put_flavors(out: &mut ReplyBody) {
    let e = out.enc();
    e.u32(2);
    e.u32(AUTH_SYS);
    e.u32(AUTH_NONE);
}
