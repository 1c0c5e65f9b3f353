//! READDIR and READDIRPLUS: pages of a folder's cached listing (the one
//! LOOKUP answers from). Cookies derive from the entries (as in NFSv4), so
//! they stay valid while the folder changes; `.` and `..` come first, with
//! cookies 1 and 2, which no entry's cookie can be.

use std::sync::Arc;

use super::args::{ReaddirArgs, ReaddirplusArgs};
use super::reply::{Answer, DirEntry, DirPage, FATTR3_SIZE};
use super::{catalog_status, Call, Nfs3Result, Nfs3Status};
use crate::catalog::{Node, NodeKind};
use crate::export::handle::NFS3_FHSIZE;
use crate::export::permission::READ;

/// Bytes of a reply besides its entries: status, the folder's
/// post_op_attr, the cookie verifier, the end-of-list marker and eof.
const FIXED: usize = 4 + 4 + FATTR3_SIZE + 8 + 4 + 4;

fn xdr_string_len(s: &str) -> usize {
    4 + s.len().div_ceil(4) * 4
}

/// The page limits: `names` bounds fileids, names and cookies (dircount),
/// `total` the whole reply.
struct Budget {
    names: usize,
    total: usize,
}

fn page(call: &Call<'_>, fh: &[u8], cookie: u64, budget: Budget, plus: bool) -> Answer<DirPage> {
    call.answer(fh, |dir| list(call, dir, cookie, budget, plus))
}

fn list(
    call: &Call<'_>,
    dir: &Arc<Node>,
    cookie: u64,
    budget: Budget,
    plus: bool,
) -> Nfs3Result<DirPage> {
    if dir.kind != NodeKind::Folder {
        return Err(Nfs3Status::NotDir);
    }
    call.require(dir, READ)?;
    let catalog = call.export.catalog();
    let listing = catalog.listing(&dir.id).map_err(|e| catalog_status(&e))?;
    let mut candidates: Vec<(u64, String, Arc<Node>)> = Vec::new();
    if cookie == 0 {
        candidates.push((1, ".".into(), dir.clone()));
    }
    if cookie <= 1 {
        let parent = catalog.parent_of(dir).map_err(|e| catalog_status(&e))?;
        candidates.push((2, "..".into(), parent));
    }
    let after = if cookie <= 2 { 0 } else { cookie };
    let (mut names, mut total) = (0usize, FIXED);
    let mut entries = Vec::new();
    let mut eof = true;
    let listing = listing.read();
    let rest = listing.after(after).filter_map(|(c, e)| {
        // An entry removed since the listing was read is skipped.
        call.export
            .catalog()
            .node(&e.id)
            .ok()
            .map(|n| (c, e.name.clone(), n))
    });
    for (entry_cookie, name, node) in candidates.into_iter().chain(rest) {
        let name_bytes = 8 + xdr_string_len(&name) + 8;
        let mut size = 4 + name_bytes;
        if plus {
            size += 4 + FATTR3_SIZE + 4 + 4 + NFS3_FHSIZE;
        }
        if names + name_bytes > budget.names || total + size > budget.total {
            eof = false;
            break;
        }
        names += name_bytes;
        total += size;
        entries.push(DirEntry {
            fileid: node.fileid,
            name,
            cookie: entry_cookie,
            node: plus.then_some(node),
        });
    }
    if entries.is_empty() && !eof {
        return Err(Nfs3Status::TooSmall);
    }
    Ok(DirPage { entries, eof, plus })
}

pub fn readdir(call: &Call<'_>, a: &ReaddirArgs<'_>) -> Answer<DirPage> {
    let count = a.count as usize;
    let budget = Budget {
        names: count,
        total: count,
    };
    page(call, a.dir, a.cookie, budget, false)
}

pub fn readdirplus(call: &Call<'_>, a: &ReaddirplusArgs<'_>) -> Answer<DirPage> {
    let budget = Budget {
        names: (a.dircount as usize).max(512),
        total: a.maxcount as usize,
    };
    page(call, a.dir, a.cookie, budget, true)
}
