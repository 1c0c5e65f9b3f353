//! A small blocking NFSv4.0 client: the project's own tool for benches, the
//! `aja` runner and protocol-level tests. It is not a witness of
//! correctness; real clients (the Linux kernel, libnfs) are.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::nfs4::consts::{op, NFS4_PROGRAM, NFS4_VERSION, PROC_COMPOUND};
use crate::rpc::message::{decode_reply, encode_call, ReplyStatus};
use crate::rpc::record::LAST_FRAGMENT;
use crate::rpc::Credentials;
use crate::xdr::{Decoder, Encoder};

mod stream;
pub use stream::{mac_uncached_pieces, pipelined_reads, pipelined_writes, WriteStream};

/// One RPC connection.
pub struct RpcClient {
    stream: TcpStream,
    next_xid: u32,
    pub credentials: Credentials,
}

impl RpcClient {
    pub fn connect(addr: SocketAddr) -> io::Result<RpcClient> {
        Self::over(TcpStream::connect_timeout(&addr, Duration::from_secs(5))?)
    }

    /// A client over a connection the caller made (from a chosen source
    /// address or port).
    pub fn over(stream: TcpStream) -> io::Result<RpcClient> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(RpcClient {
            stream,
            next_xid: 1,
            credentials: Credentials::sys("markbase-client", 0, 0, &[]),
        })
    }

    /// The xid the next call will carry (tests replay a request with it).
    pub fn set_next_xid(&mut self, xid: u32) {
        self.next_xid = xid;
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Sends bytes exactly as given (tests use it for malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one record; `Ok(None)` when the server closed the connection.
    pub fn read_record(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        loop {
            let mut h = [0u8; 4];
            match self.stream.read_exact(&mut h) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && out.is_empty() => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
            let word = u32::from_be_bytes(h);
            let len = (word & !LAST_FRAGMENT) as usize;
            let start = out.len();
            out.resize(start + len, 0);
            self.stream.read_exact(&mut out[start..])?;
            if word & LAST_FRAGMENT != 0 {
                return Ok(Some(out));
            }
        }
    }

    /// Sends one call record; returns its xid.
    pub fn send_call(
        &mut self,
        prog: u32,
        vers: u32,
        procedure: u32,
        args: &[u8],
    ) -> io::Result<u32> {
        let xid = self.next_xid;
        self.next_xid = self.next_xid.wrapping_add(1);
        let mut e = Encoder::with_buffer(vec![0; 4]);
        encode_call(&mut e, xid, prog, vers, procedure, &self.credentials);
        e.buf.extend_from_slice(args);
        let len = (e.buf.len() - 4) as u32;
        e.patch_u32(0, LAST_FRAGMENT | len);
        self.stream.write_all(&e.buf)?;
        Ok(xid)
    }

    /// Makes one call and waits for its reply: (status, result bytes).
    pub fn call(
        &mut self,
        prog: u32,
        vers: u32,
        procedure: u32,
        args: &[u8],
    ) -> io::Result<(ReplyStatus, Vec<u8>)> {
        let xid = self.send_call(prog, vers, procedure, args)?;
        let rec = self
            .read_record()?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "server closed"))?;
        let (rxid, status, at) = decode_reply(&rec)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if rxid != xid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("reply xid {rxid} for call {xid}"),
            ));
        }
        Ok((status, rec[at..].to_vec()))
    }
}

/// Builds the argument array of a COMPOUND.
#[derive(Default)]
pub struct CompoundArgs {
    ops: Encoder,
    count: u32,
}

impl CompoundArgs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an operation whose arguments `args` encodes.
    pub fn op(mut self, opnum: u32, args: impl FnOnce(&mut Encoder)) -> Self {
        self.ops.u32(opnum);
        args(&mut self.ops);
        self.count += 1;
        self
    }

    pub fn putrootfh(self) -> Self {
        self.op(op::PUTROOTFH, |_| {})
    }

    pub fn putfh(self, fh: &[u8]) -> Self {
        self.op(op::PUTFH, |e| e.opaque(fh))
    }

    pub fn lookup(self, name: &str) -> Self {
        self.op(op::LOOKUP, |e| e.string(name))
    }

    pub fn getfh(self) -> Self {
        self.op(op::GETFH, |_| {})
    }

    pub fn getattr(self, attrs: &[u32]) -> Self {
        let b = crate::nfs4::attrs::Bitmap::of(attrs);
        self.op(op::GETATTR, |e| b.encode(e))
    }

    /// The COMPOUND4args bytes.
    pub fn encode(&self, tag: &str, minor: u32) -> Vec<u8> {
        let mut e = Encoder::new();
        e.string(tag);
        e.u32(minor);
        e.u32(self.count);
        e.buf.extend_from_slice(&self.ops.buf);
        e.buf
    }

    /// The whole RPC call (without its record mark) of this COMPOUND from
    /// `cred`, as a server's dispatcher takes it.
    pub fn call_record(&self, xid: u32, cred: &Credentials, tag: &str) -> Vec<u8> {
        let mut e = Encoder::new();
        encode_call(&mut e, xid, NFS4_PROGRAM, NFS4_VERSION, PROC_COMPOUND, cred);
        e.buf.extend_from_slice(&self.encode(tag, 0));
        e.buf
    }
}

/// A decoded COMPOUND4res: overall status and the raw result array.
#[derive(Debug)]
pub struct CompoundReply {
    pub status: u32,
    pub tag: Vec<u8>,
    pub results: u32,
    /// The result array, undecoded.
    pub body: Vec<u8>,
}

impl CompoundReply {
    /// The COMPOUND in a whole RPC reply (without its record mark).
    pub fn of_reply_record(record: &[u8]) -> Option<CompoundReply> {
        let (_, _, at) = decode_reply(record).ok()?;
        CompoundReply::decode(&record[at..])
    }

    pub fn decode(bytes: &[u8]) -> Option<CompoundReply> {
        let mut d = Decoder::new(bytes);
        let status = d.u32().ok()?;
        let tag = d.opaque(usize::MAX).ok()?.to_vec();
        let results = d.u32().ok()?;
        Some(CompoundReply {
            status,
            tag,
            results,
            body: d.rest().to_vec(),
        })
    }

    /// (opnum, status) of the first result.
    pub fn first(&self) -> Option<(u32, u32)> {
        let mut d = Decoder::new(&self.body);
        Some((d.u32().ok()?, d.u32().ok()?))
    }
}

/// Sends a COMPOUND and decodes its header.
pub fn compound(
    rpc: &mut RpcClient,
    args: &CompoundArgs,
    minor: u32,
) -> io::Result<(ReplyStatus, Option<CompoundReply>)> {
    let (st, body) = rpc.call(
        NFS4_PROGRAM,
        NFS4_VERSION,
        PROC_COMPOUND,
        &args.encode("markbase", minor),
    )?;
    let reply = CompoundReply::decode(&body);
    Ok((st, reply))
}

/// Errors from [`Nfs4Client`]: transport, or an NFS status from an op.
#[derive(Debug)]
pub enum ClientError {
    Io(io::Error),
    Rpc(ReplyStatus),
    /// (opnum, nfsstat4) of the operation that failed.
    Nfs(u32, u32),
    Decode(String),
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    /// The NFS status, if that is what failed.
    pub fn status(&self) -> Option<u32> {
        match self {
            ClientError::Nfs(_, s) => Some(*s),
            _ => None,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// How OPEN creates.
#[derive(Debug, Clone, Copy)]
pub enum Create {
    No,
    Unchecked {
        mode: u32,
    },
    /// UNCHECKED4 with a size in the createattrs too (O_TRUNC, or a size
    /// for the new file).
    UncheckedSized {
        mode: u32,
        size: u64,
    },
    Guarded {
        mode: u32,
    },
    Exclusive([u8; 8]),
}

/// An open file.
#[derive(Debug, Clone)]
pub struct OpenFile {
    pub fh: Vec<u8>,
    pub stateid: (u32, [u8; 12]),
}

/// WRITE4resok.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub count: u32,
    pub committed: u32,
    pub verifier: [u8; 8],
}

/// Walks a COMPOUND4res, one result at a time.
pub struct Results<'a> {
    d: Decoder<'a>,
}

impl<'a> Results<'a> {
    /// Positions at the next result, checking its opnum and status.
    pub fn next(&mut self, opnum: u32) -> ClientResult<&mut Decoder<'a>> {
        let bad = |e: crate::xdr::XdrError| ClientError::Decode(e.to_string());
        let got = self.d.u32().map_err(bad)?;
        let status = self.d.u32().map_err(bad)?;
        if status != 0 {
            return Err(ClientError::Nfs(got, status));
        }
        if got != opnum {
            return Err(ClientError::Decode(format!(
                "result for op {got}, expected {opnum}"
            )));
        }
        Ok(&mut self.d)
    }
}

fn xdr<T>(r: crate::xdr::XdrResult<T>) -> ClientResult<T> {
    r.map_err(|e| ClientError::Decode(e.to_string()))
}

/// Open-owner seqid errors that do not advance the seqid (RFC 7530 §9.1.7).
fn seqid_unchanged(status: u32) -> bool {
    use crate::nfs4::consts::Status::*;
    [
        StaleClientId,
        StaleStateId,
        BadStateId,
        BadSeqId,
        BadXdr,
        Resource,
        NoFileHandle,
    ]
    .iter()
    .any(|s| s.code() == status)
}

/// A stateful NFSv4.0 client on one connection: one client id, one
/// open-owner.
pub struct Nfs4Client {
    pub rpc: RpcClient,
    pub clientid: u64,
    owner: Vec<u8>,
    seqid: u32,
}

impl Nfs4Client {
    /// Connects and runs SETCLIENTID / SETCLIENTID_CONFIRM.
    pub fn connect(addr: SocketAddr, name: &str) -> ClientResult<Nfs4Client> {
        let mut rpc = RpcClient::connect(addr)?;
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let args = CompoundArgs::new().op(op::SETCLIENTID, |e| {
            e.fixed(&boot.to_be_bytes());
            e.string(name);
            e.u32(0x4000_0000);
            e.string("tcp");
            e.string("127.0.0.1.0.0");
            e.u32(1);
        });
        let body = Self::call(&mut rpc, &args)?;
        let mut r = Results {
            d: Decoder::new(&body),
        };
        let d = r.next(op::SETCLIENTID)?;
        let clientid = xdr(d.u64())?;
        let confirm: [u8; 8] = xdr(d.array())?;
        let args = CompoundArgs::new().op(op::SETCLIENTID_CONFIRM, |e| {
            e.u64(clientid);
            e.fixed(&confirm);
        });
        let body = Self::call(&mut rpc, &args)?;
        Results {
            d: Decoder::new(&body),
        }
        .next(op::SETCLIENTID_CONFIRM)?;
        Ok(Nfs4Client {
            rpc,
            clientid,
            owner: format!("{name}-owner").into_bytes(),
            seqid: 1,
        })
    }

    fn call(rpc: &mut RpcClient, args: &CompoundArgs) -> ClientResult<Vec<u8>> {
        let (st, reply) = compound(rpc, args, 0)?;
        if st != ReplyStatus::Success {
            return Err(ClientError::Rpc(st));
        }
        let reply = reply.ok_or_else(|| ClientError::Decode("bad COMPOUND4res".into()))?;
        Ok(reply.body)
    }

    /// Runs a COMPOUND; the caller walks the results with [`Results`].
    pub fn compound(&mut self, args: &CompoundArgs) -> ClientResult<Vec<u8>> {
        Self::call(&mut self.rpc, args)
    }

    pub fn results(body: &[u8]) -> Results<'_> {
        Results {
            d: Decoder::new(body),
        }
    }

    /// The file handle of `path` ("a/b/c", "" = root).
    pub fn lookup(&mut self, path: &str) -> ClientResult<Vec<u8>> {
        let mut args = CompoundArgs::new().putrootfh();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for p in &parts {
            args = args.lookup(p);
        }
        let body = self.compound(&args.getfh())?;
        let mut r = Self::results(&body);
        r.next(op::PUTROOTFH)?;
        for _ in &parts {
            r.next(op::LOOKUP)?;
        }
        Ok(xdr(r.next(op::GETFH)?.opaque(128))?.to_vec())
    }

    /// OPEN `name` in folder `dir` (confirming a new open-owner).
    pub fn open(
        &mut self,
        dir: &[u8],
        name: &str,
        create: Create,
        access: u32,
    ) -> ClientResult<OpenFile> {
        let seqid = self.seqid;
        let (clientid, owner) = (self.clientid, self.owner.clone());
        let args = CompoundArgs::new().putfh(dir).op(op::OPEN, |e| {
            e.u32(seqid);
            e.u32(access);
            e.u32(0);
            e.u64(clientid);
            e.opaque(&owner);
            match create {
                Create::No => e.u32(0),
                Create::Unchecked { mode } | Create::Guarded { mode } => {
                    e.u32(1);
                    e.u32(if matches!(create, Create::Guarded { .. }) {
                        1
                    } else {
                        0
                    });
                    crate::nfs4::attrs::Bitmap::of(&[crate::nfs4::consts::attr::MODE]).encode(e);
                    e.u32(4);
                    e.u32(mode);
                }
                Create::UncheckedSized { mode, size } => {
                    e.u32(1);
                    e.u32(0);
                    use crate::nfs4::consts::attr;
                    crate::nfs4::attrs::Bitmap::of(&[attr::SIZE, attr::MODE]).encode(e);
                    e.u32(12);
                    e.u64(size);
                    e.u32(mode);
                }
                Create::Exclusive(v) => {
                    e.u32(1);
                    e.u32(2);
                    e.fixed(&v);
                }
            }
            e.u32(0); // CLAIM_NULL
            e.string(name);
        });
        let body = self.compound(&args.getfh())?;
        let mut r = Self::results(&body);
        r.next(op::PUTFH)?;
        let res = r.next(op::OPEN);
        match &res {
            Err(ClientError::Nfs(_, s)) if seqid_unchanged(*s) => {}
            _ => self.seqid = self.seqid.wrapping_add(1),
        }
        let d = res?;
        let sid = (xdr(d.u32())?, xdr(d.array::<12>())?);
        xdr(d.skip(4 + 16))?; // change_info4
        let rflags = xdr(d.u32())?;
        let n = xdr(d.count(8, 4))?;
        xdr(d.skip(4 * n))?;
        xdr(d.u32())?; // delegation: none
        let fh = xdr(r.next(op::GETFH)?.opaque(128))?.to_vec();
        let mut file = OpenFile { fh, stateid: sid };
        if rflags & crate::nfs4::consts::OPEN4_RESULT_CONFIRM != 0 {
            let seqid = self.seqid;
            let s = file.stateid;
            let args = CompoundArgs::new()
                .putfh(&file.fh)
                .op(op::OPEN_CONFIRM, |e| {
                    e.u32(s.0);
                    e.fixed(&s.1);
                    e.u32(seqid);
                });
            let body = self.compound(&args)?;
            self.seqid = self.seqid.wrapping_add(1);
            let mut r = Self::results(&body);
            r.next(op::PUTFH)?;
            let d = r.next(op::OPEN_CONFIRM)?;
            file.stateid = (xdr(d.u32())?, xdr(d.array::<12>())?);
        }
        Ok(file)
    }

    /// Arguments of PUTFH + WRITE, for callers that pipeline.
    pub fn write_args(f: &OpenFile, offset: u64, data: &[u8], stable: u32) -> CompoundArgs {
        CompoundArgs::new().putfh(&f.fh).op(op::WRITE, |e| {
            e.u32(f.stateid.0);
            e.fixed(&f.stateid.1);
            e.u64(offset);
            e.u32(stable);
            e.opaque(data);
        })
    }

    pub fn parse_write(body: &[u8]) -> ClientResult<Written> {
        let mut r = Self::results(body);
        r.next(op::PUTFH)?;
        let d = r.next(op::WRITE)?;
        Ok(Written {
            count: xdr(d.u32())?,
            committed: xdr(d.u32())?,
            verifier: xdr(d.array())?,
        })
    }

    pub fn write(
        &mut self,
        f: &OpenFile,
        offset: u64,
        data: &[u8],
        stable: u32,
    ) -> ClientResult<Written> {
        let body = self.compound(&Self::write_args(f, offset, data, stable))?;
        Self::parse_write(&body)
    }

    pub fn commit(&mut self, fh: &[u8]) -> ClientResult<[u8; 8]> {
        let args = CompoundArgs::new().putfh(fh).op(op::COMMIT, |e| {
            e.u64(0);
            e.u32(0);
        });
        let body = self.compound(&args)?;
        let mut r = Self::results(&body);
        r.next(op::PUTFH)?;
        xdr(r.next(op::COMMIT)?.array())
    }

    pub fn read(&mut self, f: &OpenFile, offset: u64, count: u32) -> ClientResult<(Vec<u8>, bool)> {
        let args = CompoundArgs::new().putfh(&f.fh).op(op::READ, |e| {
            e.u32(f.stateid.0);
            e.fixed(&f.stateid.1);
            e.u64(offset);
            e.u32(count);
        });
        let body = self.compound(&args)?;
        let mut r = Self::results(&body);
        r.next(op::PUTFH)?;
        let d = r.next(op::READ)?;
        let eof = xdr(d.bool())?;
        Ok((xdr(d.opaque(usize::MAX))?.to_vec(), eof))
    }

    /// LOCK a range. With no `lock` yet, the lock-owner `owner` is new and
    /// the lock derives from the open; returns the lock stateid.
    #[allow(clippy::too_many_arguments)]
    pub fn lock(
        &mut self,
        f: &OpenFile,
        lock: Option<(u32, [u8; 12])>,
        lock_seqid: u32,
        locktype: u32,
        offset: u64,
        length: u64,
        owner: &[u8],
    ) -> ClientResult<(u32, [u8; 12])> {
        let seqid = self.seqid;
        let clientid = self.clientid;
        let args = CompoundArgs::new().putfh(&f.fh).op(op::LOCK, |e| {
            e.u32(locktype);
            e.bool(false);
            e.u64(offset);
            e.u64(length);
            match lock {
                None => {
                    e.bool(true);
                    e.u32(seqid);
                    e.u32(f.stateid.0);
                    e.fixed(&f.stateid.1);
                    e.u32(lock_seqid);
                    e.u64(clientid);
                    e.opaque(owner);
                }
                Some(l) => {
                    e.bool(false);
                    e.u32(l.0);
                    e.fixed(&l.1);
                    e.u32(lock_seqid);
                }
            }
        });
        let body = self.compound(&args)?;
        let mut r = Self::results(&body);
        r.next(op::PUTFH)?;
        let res = r.next(op::LOCK);
        if lock.is_none() {
            match &res {
                Err(ClientError::Nfs(_, s)) if seqid_unchanged(*s) => {}
                _ => self.seqid = self.seqid.wrapping_add(1),
            }
        }
        let d = res?;
        Ok((xdr(d.u32())?, xdr(d.array::<12>())?))
    }

    /// LOCKU; returns the new lock stateid.
    pub fn unlock(
        &mut self,
        f: &OpenFile,
        lock: (u32, [u8; 12]),
        lock_seqid: u32,
        offset: u64,
        length: u64,
    ) -> ClientResult<(u32, [u8; 12])> {
        let args = CompoundArgs::new().putfh(&f.fh).op(op::LOCKU, |e| {
            e.u32(2);
            e.u32(lock_seqid);
            e.u32(lock.0);
            e.fixed(&lock.1);
            e.u64(offset);
            e.u64(length);
        });
        let body = self.compound(&args)?;
        let mut r = Self::results(&body);
        r.next(op::PUTFH)?;
        let d = r.next(op::LOCKU)?;
        Ok((xdr(d.u32())?, xdr(d.array::<12>())?))
    }

    pub fn release_lockowner(&mut self, owner: &[u8]) -> ClientResult<()> {
        let clientid = self.clientid;
        let args = CompoundArgs::new().op(op::RELEASE_LOCKOWNER, |e| {
            e.u64(clientid);
            e.opaque(owner);
        });
        let body = self.compound(&args)?;
        Self::results(&body).next(op::RELEASE_LOCKOWNER).map(|_| ())
    }

    /// Uses another open-owner name for the OPENs that follow.
    pub fn set_open_owner(&mut self, owner: &str) {
        self.owner = owner.as_bytes().to_vec();
        self.seqid = 1;
    }

    /// REMOVE `name` from folder `dir`.
    pub fn remove(&mut self, dir: &[u8], name: &str) -> ClientResult<()> {
        let args = CompoundArgs::new()
            .putfh(dir)
            .op(op::REMOVE, |e| e.string(name));
        let body = self.compound(&args)?;
        let mut r = Self::results(&body);
        r.next(op::PUTFH)?;
        r.next(op::REMOVE).map(|_| ())
    }

    /// RENAME `from_dir/old` to `to_dir/new` (replacing a target there).
    pub fn rename(
        &mut self,
        from_dir: &[u8],
        old: &str,
        to_dir: &[u8],
        new: &str,
    ) -> ClientResult<()> {
        let args = CompoundArgs::new()
            .putfh(from_dir)
            .op(op::SAVEFH, |_| {})
            .putfh(to_dir)
            .op(op::RENAME, |e| {
                e.string(old);
                e.string(new);
            });
        let body = self.compound(&args)?;
        let mut r = Self::results(&body);
        r.next(op::PUTFH)?;
        r.next(op::SAVEFH)?;
        r.next(op::PUTFH)?;
        r.next(op::RENAME).map(|_| ())
    }

    /// The open-owner seqid the next OPEN, CLOSE… of this client will carry.
    pub fn next_seqid(&self) -> u32 {
        self.seqid
    }

    pub fn close(&mut self, f: &OpenFile) -> ClientResult<()> {
        let seqid = self.seqid;
        let args = CompoundArgs::new().putfh(&f.fh).op(op::CLOSE, |e| {
            e.u32(seqid);
            e.u32(f.stateid.0);
            e.fixed(&f.stateid.1);
        });
        let body = self.compound(&args)?;
        let mut r = Self::results(&body);
        r.next(op::PUTFH)?;
        let res = r.next(op::CLOSE).map(|_| ());
        match &res {
            Err(ClientError::Nfs(_, s)) if seqid_unchanged(*s) => {}
            _ => self.seqid = self.seqid.wrapping_add(1),
        }
        res
    }
}
