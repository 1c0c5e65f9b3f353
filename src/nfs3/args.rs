//! NFSv3 procedure arguments (RFC 1813 §3.3), decoded into typed structs
//! before any handler runs. Opaque data (handles, names, WRITE payloads)
//! is borrowed from the record.

use crate::catalog::MAX_NAME;
use crate::export::handle::NFS3_FHSIZE;
use crate::rpc::{BulkArgument, BulkData};
use crate::xdr::{Decoder, XdrError, XdrResult};

/// Longest symlink target (PATH_MAX on Linux and macOS).
pub const MAX_PATH: usize = 4096;

fn fh<'a>(d: &mut Decoder<'a>) -> XdrResult<&'a [u8]> {
    d.opaque(NFS3_FHSIZE)
}

/// A filename3 as sent: checked by the handler (so a bad name is an NFS
/// error, not GARBAGE_ARGS).
fn name<'a>(d: &mut Decoder<'a>) -> XdrResult<&'a [u8]> {
    d.opaque(MAX_NAME.max(1024))
}

/// nfstime3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Time3 {
    pub seconds: u32,
    pub nseconds: u32,
}

impl Time3 {
    fn decode(d: &mut Decoder<'_>) -> XdrResult<Time3> {
        Ok(Time3 {
            seconds: d.u32()?,
            nseconds: d.u32()?,
        })
    }

    pub fn from_ns(ns: i64) -> Time3 {
        let ns = ns.max(0);
        Time3 {
            seconds: (ns / 1_000_000_000).min(u32::MAX as i64) as u32,
            nseconds: (ns % 1_000_000_000) as u32,
        }
    }

    pub fn to_ns(self) -> i64 {
        self.seconds as i64 * 1_000_000_000 + self.nseconds as i64
    }
}

/// set_atime / set_mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    ServerTime,
    ClientTime(Time3),
}

/// sattr3: the attributes a client sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sattr3 {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

impl Sattr3 {
    pub fn decode(d: &mut Decoder<'_>) -> XdrResult<Sattr3> {
        let opt32 = |d: &mut Decoder<'_>| -> XdrResult<Option<u32>> {
            Ok(if d.bool()? { Some(d.u32()?) } else { None })
        };
        let time = |d: &mut Decoder<'_>| -> XdrResult<Option<SetTime>> {
            Ok(match d.u32()? {
                0 => None,
                1 => Some(SetTime::ServerTime),
                2 => Some(SetTime::ClientTime(Time3::decode(d)?)),
                _ => return Err(XdrError::BadValue),
            })
        };
        Ok(Sattr3 {
            mode: opt32(d)?,
            uid: opt32(d)?,
            gid: opt32(d)?,
            size: if d.bool()? { Some(d.u64()?) } else { None },
            atime: time(d)?,
            mtime: time(d)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Sattr3::default()
    }
}

/// Arguments that are one handle (GETATTR, READLINK, FSSTAT, FSINFO,
/// PATHCONF).
#[derive(Debug)]
pub struct FhArgs<'a> {
    pub fh: &'a [u8],
}

impl<'a> FhArgs<'a> {
    pub fn decode(d: &mut Decoder<'a>) -> XdrResult<Self> {
        Ok(FhArgs { fh: fh(d)? })
    }
}

#[derive(Debug)]
pub struct SetattrArgs<'a> {
    pub fh: &'a [u8],
    pub attrs: Sattr3,
    /// sattrguard3: apply only if the object's ctime is this.
    pub guard: Option<Time3>,
}

impl<'a> SetattrArgs<'a> {
    pub fn decode(d: &mut Decoder<'a>) -> XdrResult<Self> {
        Ok(SetattrArgs {
            fh: fh(d)?,
            attrs: Sattr3::decode(d)?,
            guard: if d.bool()? {
                Some(Time3::decode(d)?)
            } else {
                None
            },
        })
    }
}

/// diropargs3: a folder and a name in it.
#[derive(Debug)]
pub struct DirOpArgs<'a> {
    pub dir: &'a [u8],
    pub name: &'a [u8],
}

impl<'a> DirOpArgs<'a> {
    pub fn decode(d: &mut Decoder<'a>) -> XdrResult<Self> {
        Ok(DirOpArgs {
            dir: fh(d)?,
            name: name(d)?,
        })
    }
}

#[derive(Debug)]
pub struct AccessArgs<'a> {
    pub fh: &'a [u8],
    pub access: u32,
}

impl<'a> AccessArgs<'a> {
    pub fn decode(d: &mut Decoder<'a>) -> XdrResult<Self> {
        Ok(AccessArgs {
            fh: fh(d)?,
            access: d.u32()?,
        })
    }
}

#[derive(Debug)]
pub struct ReadArgs<'a> {
    pub fh: &'a [u8],
    pub offset: u64,
    pub count: u32,
}

impl<'a> ReadArgs<'a> {
    pub fn decode(d: &mut Decoder<'a>) -> XdrResult<Self> {
        Ok(ReadArgs {
            fh: fh(d)?,
            offset: d.u64()?,
            count: d.u32()?,
        })
    }
}

/// stable_how.
pub const UNSTABLE: u32 = 0;
pub const FILE_SYNC: u32 = 2;

/// Where a WRITE's data is: in the record, or cut out of it into pipes by
/// the transport.
#[derive(Debug)]
pub enum Payload<'a> {
    Bytes(&'a [u8]),
    Pipe(&'a BulkData),
}

impl Payload<'_> {
    pub fn len(&self) -> usize {
        match self {
            Payload::Bytes(b) => b.len(),
            Payload::Pipe(p) => p.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
pub struct WriteArgs<'a> {
    pub fh: &'a [u8],
    pub offset: u64,
    pub count: u32,
    pub stable: u32,
    pub data: Payload<'a>,
}

impl<'a> WriteArgs<'a> {
    pub fn decode(
        d: &mut Decoder<'a>,
        bulk: Option<&'a BulkData>,
        max_write: u32,
    ) -> XdrResult<Self> {
        let fh = fh(d)?;
        let offset = d.u64()?;
        let count = d.u32()?;
        let stable = d.u32()?;
        let data = match bulk {
            Some(b) if b.at == d.position() + 4 => {
                if d.u32()? as usize != b.len {
                    return Err(XdrError::BadValue);
                }
                Payload::Pipe(b)
            }
            _ => Payload::Bytes(d.opaque(max_write as usize)?),
        };
        Ok(WriteArgs {
            fh,
            offset,
            count,
            stable,
            data,
        })
    }
}

/// Where an UNSTABLE WRITE's data starts, from the head of its arguments,
/// so the transport can splice it (FILE_SYNC and DATA_SYNC stay in the
/// record: they are written with a sync of their own range).
pub fn locate_write_data(args: &[u8], max_write: usize) -> Option<BulkArgument> {
    let mut d = Decoder::new(args);
    let fh = fh(&mut d).ok()?;
    d.skip(8 + 4).ok()?; // offset, count
    if d.u32().ok()? != UNSTABLE {
        return None;
    }
    let len = d.u32().ok()? as usize;
    (len <= max_write).then(|| BulkArgument {
        at: d.position(),
        len,
        order: crate::catalog::fnv1a(fh),
    })
}

/// createhow3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateHow {
    Unchecked(Sattr3),
    Guarded(Sattr3),
    Exclusive([u8; 8]),
}

#[derive(Debug)]
pub struct CreateArgs<'a> {
    pub at: DirOpArgs<'a>,
    pub how: CreateHow,
}

impl<'a> CreateArgs<'a> {
    pub fn decode(d: &mut Decoder<'a>) -> XdrResult<Self> {
        let at = DirOpArgs::decode(d)?;
        let how = match d.u32()? {
            0 => CreateHow::Unchecked(Sattr3::decode(d)?),
            1 => CreateHow::Guarded(Sattr3::decode(d)?),
            2 => CreateHow::Exclusive(d.array()?),
            _ => return Err(XdrError::BadValue),
        };
        Ok(CreateArgs { at, how })
    }
}

#[derive(Debug)]
pub struct MkdirArgs<'a> {
    pub at: DirOpArgs<'a>,
    pub attrs: Sattr3,
}

impl<'a> MkdirArgs<'a> {
    pub fn decode(d: &mut Decoder<'a>) -> XdrResult<Self> {
        Ok(MkdirArgs {
            at: DirOpArgs::decode(d)?,
            attrs: Sattr3::decode(d)?,
        })
    }
}

#[derive(Debug)]
pub struct SymlinkArgs<'a> {
    pub at: DirOpArgs<'a>,
    pub attrs: Sattr3,
    pub target: &'a [u8],
}

impl<'a> SymlinkArgs<'a> {
    pub fn decode(d: &mut Decoder<'a>) -> XdrResult<Self> {
        Ok(SymlinkArgs {
            at: DirOpArgs::decode(d)?,
            attrs: Sattr3::decode(d)?,
            target: d.opaque(MAX_PATH)?,
        })
    }
}

/// ftype3 values MKNOD takes.
pub const NF3BLK: u32 = 3;
pub const NF3CHR: u32 = 4;
pub const NF3SOCK: u32 = 6;
pub const NF3FIFO: u32 = 7;

#[derive(Debug)]
pub struct MknodArgs<'a> {
    pub at: DirOpArgs<'a>,
    pub ftype: u32,
    pub attrs: Sattr3,
    /// specdata3 of a block or character device.
    pub rdev: (u32, u32),
}

impl<'a> MknodArgs<'a> {
    pub fn decode(d: &mut Decoder<'a>) -> XdrResult<Self> {
        let at = DirOpArgs::decode(d)?;
        let ftype = d.u32()?;
        let (attrs, rdev) = match ftype {
            NF3BLK | NF3CHR => {
                let attrs = Sattr3::decode(d)?;
                (attrs, (d.u32()?, d.u32()?))
            }
            NF3SOCK | NF3FIFO => (Sattr3::decode(d)?, (0, 0)),
            _ => (Sattr3::default(), (0, 0)),
        };
        Ok(MknodArgs {
            at,
            ftype,
            attrs,
            rdev,
        })
    }
}

#[derive(Debug)]
pub struct RenameArgs<'a> {
    pub from: DirOpArgs<'a>,
    pub to: DirOpArgs<'a>,
}

impl<'a> RenameArgs<'a> {
    pub fn decode(d: &mut Decoder<'a>) -> XdrResult<Self> {
        Ok(RenameArgs {
            from: DirOpArgs::decode(d)?,
            to: DirOpArgs::decode(d)?,
        })
    }
}

#[derive(Debug)]
pub struct LinkArgs<'a> {
    pub file: &'a [u8],
    pub link: DirOpArgs<'a>,
}

impl<'a> LinkArgs<'a> {
    pub fn decode(d: &mut Decoder<'a>) -> XdrResult<Self> {
        Ok(LinkArgs {
            file: fh(d)?,
            link: DirOpArgs::decode(d)?,
        })
    }
}

#[derive(Debug)]
pub struct ReaddirArgs<'a> {
    pub dir: &'a [u8],
    pub cookie: u64,
    pub verifier: [u8; 8],
    /// Most bytes of READDIR3resok.
    pub count: u32,
}

impl<'a> ReaddirArgs<'a> {
    pub fn decode(d: &mut Decoder<'a>) -> XdrResult<Self> {
        Ok(ReaddirArgs {
            dir: fh(d)?,
            cookie: d.u64()?,
            verifier: d.array()?,
            count: d.u32()?,
        })
    }
}

#[derive(Debug)]
pub struct ReaddirplusArgs<'a> {
    pub dir: &'a [u8],
    pub cookie: u64,
    pub verifier: [u8; 8],
    /// Most bytes of the entries' fileids, names and cookies.
    pub dircount: u32,
    /// Most bytes of READDIRPLUS3resok.
    pub maxcount: u32,
}

impl<'a> ReaddirplusArgs<'a> {
    pub fn decode(d: &mut Decoder<'a>) -> XdrResult<Self> {
        Ok(ReaddirplusArgs {
            dir: fh(d)?,
            cookie: d.u64()?,
            verifier: d.array()?,
            dircount: d.u32()?,
            maxcount: d.u32()?,
        })
    }
}

#[derive(Debug)]
pub struct CommitArgs<'a> {
    pub fh: &'a [u8],
    pub offset: u64,
    pub count: u32,
}

impl<'a> CommitArgs<'a> {
    pub fn decode(d: &mut Decoder<'a>) -> XdrResult<Self> {
        Ok(CommitArgs {
            fh: fh(d)?,
            offset: d.u64()?,
            count: d.u32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdr::Encoder;

    fn write_args(stable: u32, data: &[u8]) -> Vec<u8> {
        let mut e = Encoder::new();
        e.opaque(&[7u8; 30]);
        e.u64(1 << 20);
        e.u32(data.len() as u32);
        e.u32(stable);
        e.opaque(data);
        e.buf
    }

    /// An UNSTABLE WRITE's payload is found from the head of its
    /// arguments (so the transport splices it); a FILE_SYNC one stays in
    /// the record; decoding finds the same bytes.
    #[test]
    fn write_payloads_are_located_for_splicing() {
        let args = write_args(UNSTABLE, b"frame data");
        let at = 4 + 32 + 8 + 4 + 4 + 4;
        let found = locate_write_data(&args[..at], 1 << 20).unwrap();
        assert_eq!((found.at, found.len), (at, 10));
        assert_eq!(&args[found.at..found.at + found.len], b"frame data");
        assert!(locate_write_data(&write_args(FILE_SYNC, b"x"), 1 << 20).is_none());
        assert!(
            locate_write_data(&args, 4).is_none(),
            "longer than max_write"
        );
        let mut d = Decoder::new(&args);
        let w = WriteArgs::decode(&mut d, None, 1 << 20).unwrap();
        assert!(matches!(w.data, Payload::Bytes(b) if b == b"frame data"));
        assert_eq!((w.offset, w.count, w.stable), (1 << 20, 10, UNSTABLE));
    }
}
