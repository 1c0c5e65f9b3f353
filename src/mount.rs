//! The MOUNT protocol, version 3 (RFC 1813 appendix I): how an NFSv3
//! client gets the export's root handle. Served on the NFS port itself
//! (`mount_nfs -o vers=3,port=P,mountport=P`, Linux `mountport=P`), so no
//! rpcbind is needed. One export at `/`, or several each at `/name`; a
//! client may mount any folder path under an export.
//!
//! Versions 1 and 2 answer every procedure but MNT (their handles are
//! NFSv2's, not served): macOS unmounts an NFSv3 mount with a version 1
//! UMNT (apple-oss-distributions/NFS, kext/nfs_vfsops.c: nfs3_umount_rpc).
//! MNT from a machine not in the export's `clients` answers MNT3ERR_ACCES.

use std::collections::VecDeque;

use parking_lot::Mutex;

use crate::export::{handle::NFS3_FHSIZE, Export, Exports};
use crate::rpc::{AcceptError, CallContext, Program, ReplyBody};
use crate::xdr::{Decoder, Encoder};

pub const MOUNT_PROGRAM: u32 = 100005;
pub const MOUNT_V3: u32 = 3;
/// The oldest version answered (UMNT, UMNTALL, DUMP, EXPORT: the same XDR).
pub const MOUNT_V1: u32 = 1;

const MOUNTPROC3_NULL: u32 = 0;
const MOUNTPROC3_MNT: u32 = 1;
const MOUNTPROC3_DUMP: u32 = 2;
const MOUNTPROC3_UMNT: u32 = 3;
const MOUNTPROC3_UMNTALL: u32 = 4;
const MOUNTPROC3_EXPORT: u32 = 5;

/// MNTPATHLEN: longest path a client may ask to mount.
const MNTPATHLEN: usize = 1024;
/// Mounts remembered for DUMP (host, path); the oldest go first.
const MOUNTS_KEPT: usize = 1024;

/// mountstat3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MountStat {
    Ok = 0,
    NoEnt = 2,
    Io = 5,
    /// The caller's machine is not in `export.clients`.
    Acces = 13,
    NotDir = 20,
    Inval = 22,
    NameTooLong = 63,
    ServerFault = 10006,
}

const AUTH_NONE: u32 = 0;
const AUTH_SYS: u32 = 1;

pub struct MountServer {
    /// One export at `/`, or several, each at its `/name`.
    exports: Exports,
    /// Who mounted what, for DUMP (informational, as RFC 1813 has it).
    mounts: Mutex<VecDeque<(String, String)>>,
}

impl MountServer {
    pub fn serving(exports: Exports) -> MountServer {
        MountServer {
            exports,
            mounts: Mutex::new(VecDeque::new()),
        }
    }

    /// Whom a MNT of `path` is from: the export holding it if that export
    /// serves `peer`.
    fn admitted(
        &self,
        path: &str,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Vec<u8>, MountStat> {
        let (export, rest) = self.exports.at_path(path).ok_or(MountStat::NoEnt)?;
        export.admit(peer).map_err(|_| MountStat::Acces)?;
        Self::mount_in(export, rest)
    }

    /// The root handle of the folder at `path` in `export`.
    fn mount_in(export: &Export, path: &str) -> Result<Vec<u8>, MountStat> {
        let catalog = export.catalog();
        let mut node = catalog.root();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            node = match catalog.lookup(&node.id, part) {
                Ok(Some(n)) => n,
                Ok(None) => return Err(MountStat::NoEnt),
                Err(crate::catalog::CatalogError::NotFolder(_)) => return Err(MountStat::NotDir),
                Err(e) => {
                    tracing::error!(path, error = %e, "MNT: catalog lookup failed");
                    return Err(MountStat::Io);
                }
            };
        }
        if node.kind != crate::catalog::NodeKind::Folder {
            return Err(MountStat::NotDir);
        }
        export
            .handle_within(&node, NFS3_FHSIZE)
            .map_err(|_| MountStat::ServerFault)
    }

    fn remember(&self, host: String, path: String) {
        let mut m = self.mounts.lock();
        if m.iter().any(|(h, p)| *h == host && *p == path) {
            return;
        }
        if m.len() == MOUNTS_KEPT {
            m.pop_front();
        }
        m.push_back((host, path));
    }
}

fn host_of(ctx: &CallContext) -> String {
    ctx.peer.map(|p| p.ip().to_string()).unwrap_or_default()
}

impl Program for MountServer {
    fn number(&self) -> u32 {
        MOUNT_PROGRAM
    }

    fn versions(&self) -> (u32, u32) {
        (MOUNT_V1, MOUNT_V3)
    }

    fn call(&self, ctx: &CallContext, args: &[u8], out: &mut ReplyBody) -> Result<(), AcceptError> {
        let mut d = Decoder::new(args);
        let path = |d: &mut Decoder<'_>| -> Result<String, AcceptError> {
            let raw = d.opaque(MNTPATHLEN).map_err(|_| AcceptError::GarbageArgs)?;
            Ok(String::from_utf8_lossy(raw).into_owned())
        };
        let e = out.enc();
        match ctx.procedure {
            MOUNTPROC3_NULL => {}
            // fhstatus carries a 32-byte NFSv2 handle: not served.
            MOUNTPROC3_MNT if ctx.version < MOUNT_V3 => return Err(AcceptError::ProcUnavail),
            MOUNTPROC3_MNT => {
                let p = match d.opaque(usize::MAX) {
                    Ok(raw) if raw.len() > MNTPATHLEN => {
                        e.u32(MountStat::NameTooLong as u32);
                        return Ok(());
                    }
                    Ok(raw) => String::from_utf8_lossy(raw).into_owned(),
                    Err(_) => return Err(AcceptError::GarbageArgs),
                };
                let mounted = self.admitted(&p, ctx.peer);
                match mounted {
                    Ok(fh) => {
                        tracing::info!(host = %host_of(ctx), path = %p, "NFSv3 mount");
                        self.remember(host_of(ctx), p);
                        e.u32(MountStat::Ok as u32);
                        e.opaque(&fh);
                        // AUTH_SYS, then AUTH_NONE (RFC 1813 appendix I).
                        e.u32(2);
                        e.u32(AUTH_SYS);
                        e.u32(AUTH_NONE);
                    }
                    Err(st) => e.u32(st as u32),
                }
            }
            MOUNTPROC3_DUMP => {
                for (host, p) in self.mounts.lock().iter() {
                    e.bool(true);
                    e.string(host);
                    e.string(p);
                }
                e.bool(false);
            }
            MOUNTPROC3_UMNT => {
                let p = path(&mut d)?;
                let host = host_of(ctx);
                self.mounts.lock().retain(|(h, q)| !(*h == host && *q == p));
            }
            MOUNTPROC3_UMNTALL => {
                let host = host_of(ctx);
                self.mounts.lock().retain(|(h, _)| *h != host);
            }
            MOUNTPROC3_EXPORT => {
                // Each export, with the machines it serves as its groups
                // (what `showmount -e` prints beside it).
                for export in &self.exports {
                    e.bool(true);
                    e.string(export.path());
                    for name in export.client_names() {
                        e.bool(true);
                        e.string(&name);
                    }
                    e.bool(false);
                }
                e.bool(false);
            }
            _ => return Err(AcceptError::ProcUnavail),
        }
        Ok(())
    }
}

/// Encodes a MNT call's arguments (for the project's own client and tests).
pub fn mnt_args(path: &str) -> Vec<u8> {
    let mut e = Encoder::new();
    e.string(path);
    e.buf
}
