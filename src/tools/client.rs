//! A small blocking NFSv4.0 client: the project's own tool for benches, the
//! `aja` runner and protocol-level tests. It is not a witness of
//! correctness; real clients (the Linux kernel, libnfs) are.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::nfs4::consts::{op, NFS4_PROGRAM, NFS4_VERSION, PROC_COMPOUND};
use crate::rpc::message::{decode_reply, encode_call, ReplyStatus};
use crate::rpc::record::LAST_FRAGMENT;
use crate::rpc::{AuthSys, Credentials};
use crate::xdr::{Decoder, Encoder};

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
            credentials: Credentials::Sys(AuthSys {
                stamp: 0,
                machine: "markbase-client".into(),
                uid: 0,
                gid: 0,
                gids: vec![],
            }),
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

/// Reads one reply record and checks it is a successful RPC; returns the
/// COMPOUND4res result array.
fn read_compound_reply(rpc: &mut RpcClient) -> ClientResult<Vec<u8>> {
    let reply = rpc
        .read_record()?
        .ok_or_else(|| ClientError::Io(io::ErrorKind::UnexpectedEof.into()))?;
    let (_, st, at) = decode_reply(&reply).map_err(|e| ClientError::Decode(e.to_string()))?;
    if st != ReplyStatus::Success {
        return Err(ClientError::Rpc(st));
    }
    Ok(CompoundReply::decode(&reply[at..])
        .ok_or_else(|| ClientError::Decode("bad COMPOUND4res".into()))?
        .body)
}

/// Builds a WRITE call record once and re-stamps its xid and offset per
/// request, so streaming costs the client little CPU.
pub struct WriteStream {
    record: Vec<u8>,
    offset_at: usize,
    /// Where the payload starts in `record`; it is never changed after
    /// `new`, which is what lets [`WriteStream::lend_payload`] work.
    data_at: usize,
    chunk: usize,
    next_xid: u32,
    /// Set by `lend_payload`: payloads go out through this pipe.
    lender: Option<crate::pipe::Pipe>,
    /// The call of a WRITE of no data (record mark, RPC header, COMPOUND up
    /// to the opaque's length word): a shorter WRITE (a frame's last) sends
    /// it re-stamped, then its data straight from `record`.
    head: Vec<u8>,
    /// The stream's stable_how, as its records were built.
    stable: u32,
}

impl WriteStream {
    pub fn new(rpc: &RpcClient, f: &OpenFile, chunk: usize, stable: u32) -> WriteStream {
        let data = vec![0xa5u8; chunk];
        let (record, offset_at) = write_record(rpc, f, &data, stable);
        // The opaque's length word sits right after the offset and
        // stable_how fields; the data follows it.
        let data_at = offset_at + 8 + 4 + 4;
        let (head, _) = write_record(rpc, f, &[], stable);
        debug_assert_eq!(head.len(), data_at);
        WriteStream {
            record,
            offset_at,
            data_at,
            chunk,
            next_xid: 0x1000_0000,
            lender: None,
            head,
            stable,
        }
    }

    /// Linux: send payloads without copying them (vmsplice +
    /// splice, see [`crate::pipe::Pipe::send_lent`]). Over loopback the
    /// client shares the server's CPUs; a remote client's copy costs the
    /// server nothing, and this shows what the server does in that case.
    /// Returns false (and sends as before) where that is not possible.
    pub fn lend_payload(&mut self) -> bool {
        self.lender = crate::pipe::Pipe::with_capacity(self.chunk)
            .ok()
            .filter(|p| p.capacity() >= self.chunk);
        self.lender.is_some()
    }

    /// Writes `len` bytes at `offset` with up to `inflight` WRITEs
    /// outstanding; the last one may be shorter than a chunk.
    pub fn write(
        &mut self,
        rpc: &mut RpcClient,
        offset: u64,
        len: u64,
        inflight: usize,
    ) -> ClientResult<()> {
        let chunks = len.div_ceil(self.chunk as u64);
        let (mut sent, mut done) = (0u64, 0u64);
        while done < chunks {
            while sent < chunks && sent - done < inflight as u64 {
                let at = offset + sent * self.chunk as u64;
                let this = (len - sent * self.chunk as u64).min(self.chunk as u64) as usize;
                self.next_xid = self.next_xid.wrapping_add(1);
                self.send_one(rpc, at, this)?;
                sent += 1;
            }
            let body = read_compound_reply(rpc)?;
            Nfs4Client::parse_write(&body)?;
            done += 1;
        }
        Ok(())
    }

    /// Writes `len` bytes at `offset` as a Mac writes with its cache off
    /// (F_NOCACHE; AJA System Test's "Disable file system cache"): in
    /// pieces split at the file's `block` boundaries (the kext's biosize,
    /// its rsize/wsize), where a piece shorter than a block that starts or
    /// ends inside a `page` (16 KiB on Apple silicon) goes FILE_SYNC and
    /// the rest UNSTABLE (kext/nfs_vnops.c: nfs_vnop_write, the NB_NOCACHE
    /// partial-page rule), with up to `inflight` outstanding. Returns how
    /// many WRITEs went FILE_SYNC.
    pub fn write_like_mac_uncached(
        &mut self,
        rpc: &mut RpcClient,
        offset: u64,
        len: u64,
        inflight: usize,
        block: u64,
        page: u64,
    ) -> ClientResult<u64> {
        let pieces = mac_uncached_pieces(offset, len, block, page);
        let synced = pieces.iter().filter(|p| p.2).count() as u64;
        let (mut sent, mut done) = (0usize, 0usize);
        while done < pieces.len() {
            while sent < pieces.len() && sent - done < inflight {
                let (at, n, sync) = pieces[sent];
                self.next_xid = self.next_xid.wrapping_add(1);
                self.send_stable(rpc, at, n, if sync { 2 } else { 0 })?;
                sent += 1;
            }
            let body = read_compound_reply(rpc)?;
            Nfs4Client::parse_write(&body)?;
            done += 1;
        }
        Ok(synced)
    }

    /// Sends one whole-chunk WRITE at `offset` and leaves its reply to the
    /// caller (who may interleave other calls on the connection).
    pub fn send_at(&mut self, rpc: &mut RpcClient, offset: u64) -> ClientResult<()> {
        self.next_xid = self.next_xid.wrapping_add(1);
        self.send_one(rpc, offset, self.chunk)
    }

    /// Sends one WRITE with the given stable_how (the stream's records are
    /// built UNSTABLE and re-stamped).
    fn send_stable(
        &mut self,
        rpc: &mut RpcClient,
        offset: u64,
        len: usize,
        stable: u32,
    ) -> ClientResult<()> {
        self.stamp_stable(stable);
        let sent = self.send_one(rpc, offset, len);
        self.stamp_stable(self.stable);
        sent
    }

    fn stamp_stable(&mut self, stable: u32) {
        let at = self.offset_at + 8;
        for rec in [&mut self.record, &mut self.head] {
            rec[at..at + 4].copy_from_slice(&stable.to_be_bytes());
        }
    }

    /// Sends one WRITE of `len` (at most a chunk) bytes at `offset`.
    fn send_one(&mut self, rpc: &mut RpcClient, offset: u64, len: usize) -> ClientResult<()> {
        let (full, data_at) = (len == self.chunk, self.data_at);
        let pad = len.next_multiple_of(4) - len;
        if !full {
            // A shorter WRITE: its own head, with its record and data lengths.
            let record_len = (data_at - 4 + len + pad) as u32;
            self.head[0..4].copy_from_slice(&(LAST_FRAGMENT | record_len).to_be_bytes());
            self.head[data_at - 4..data_at].copy_from_slice(&(len as u32).to_be_bytes());
        }
        let head = if full {
            &mut self.record[..data_at]
        } else {
            &mut self.head[..]
        };
        head[4..8].copy_from_slice(&self.next_xid.to_be_bytes());
        head[self.offset_at..self.offset_at + 8].copy_from_slice(&offset.to_be_bytes());
        let head = if full {
            &self.record[..data_at]
        } else {
            &self.head[..]
        };
        let data = &self.record[data_at..data_at + len];
        match &self.lender {
            // The whole record (its padding included) in one send.
            None if full => return Ok(rpc.send_raw(&self.record)?),
            None => {
                rpc.send_raw(head)?;
                rpc.send_raw(data)?;
            }
            Some(pipe) => {
                rpc.send_raw(head)?;
                let socket = std::os::fd::AsRawFd::as_raw_fd(rpc.stream());
                pipe.send_lent(socket, data)?;
            }
        }
        Ok(rpc.send_raw(&[0u8; 3][..pad])?)
    }
}

/// The WRITEs a Mac with its cache off sends for `len` bytes at `offset`:
/// (offset, length, FILE_SYNC?) of pieces split at `block` boundaries,
/// FILE_SYNC where a piece shorter than a block starts or ends inside a
/// `page` (see [`WriteStream::write_like_mac_uncached`]).
pub fn mac_uncached_pieces(
    offset: u64,
    len: u64,
    block: u64,
    page: u64,
) -> Vec<(u64, usize, bool)> {
    let end = offset + len;
    let mut pieces = Vec::new();
    let mut at = offset;
    while at < end {
        let next = ((at / block + 1) * block).min(end);
        let partial = next - at < block;
        let misaligned = !at.is_multiple_of(page) || !next.is_multiple_of(page);
        pieces.push((at, (next - at) as usize, partial && misaligned));
        at = next;
    }
    pieces
}

/// A complete WRITE call record (record mark included) and where its
/// offset field is.
fn write_record(rpc: &RpcClient, f: &OpenFile, data: &[u8], stable: u32) -> (Vec<u8>, usize) {
    let args = Nfs4Client::write_args(f, 0, data, stable).encode("w", 0);
    let mut rec = Encoder::with_buffer(vec![0; 4]);
    encode_call(
        &mut rec,
        0,
        NFS4_PROGRAM,
        NFS4_VERSION,
        PROC_COMPOUND,
        &rpc.credentials,
    );
    let args_at = rec.len();
    rec.buf.extend_from_slice(&args);
    let len = rec.len() - 4;
    rec.patch_u32(0, LAST_FRAGMENT | len as u32);
    // Offset field: after tag, minorversion, count, PUTFH (op + fh), the
    // WRITE opnum and the stateid.
    let fh_len = 4 + f.fh.len().div_ceil(4) * 4;
    let offset_at = args_at + 4 + 4 + 4 + 4 + 4 + fh_len + 4 + 16;
    (rec.buf, offset_at)
}

/// Streams `total` bytes to `f` from offset 0 in `chunk`-sized WRITEs with
/// up to `inflight` outstanding on one connection.
pub fn pipelined_writes(
    rpc: &mut RpcClient,
    f: &OpenFile,
    total: u64,
    chunk: usize,
    inflight: usize,
    stable: u32,
) -> ClientResult<()> {
    WriteStream::new(rpc, f, chunk, stable).write(rpc, 0, total, inflight)
}

/// Reads `len` bytes at `offset` in `chunk`-sized READs with up to
/// `inflight` outstanding; returns the bytes received.
pub fn pipelined_reads(
    rpc: &mut RpcClient,
    f: &OpenFile,
    offset: u64,
    len: u64,
    chunk: usize,
    inflight: usize,
) -> ClientResult<u64> {
    let chunks = len.div_ceil(chunk as u64);
    let (mut sent, mut done, mut got) = (0u64, 0u64, 0u64);
    while done < chunks {
        while sent < chunks && sent - done < inflight as u64 {
            let at = offset + sent * chunk as u64;
            let this = (len - sent * chunk as u64).min(chunk as u64) as u32;
            let args = CompoundArgs::new().putfh(&f.fh).op(op::READ, |e| {
                e.u32(f.stateid.0);
                e.fixed(&f.stateid.1);
                e.u64(at);
                e.u32(this);
            });
            rpc.send_call(
                NFS4_PROGRAM,
                NFS4_VERSION,
                PROC_COMPOUND,
                &args.encode("r", 0),
            )?;
            sent += 1;
        }
        let body = read_compound_reply(rpc)?;
        let mut r = Nfs4Client::results(&body);
        r.next(op::PUTFH)?;
        let d = r.next(op::READ)?;
        xdr(d.bool())?;
        got += xdr(d.opaque(usize::MAX))?.len() as u64;
        done += 1;
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uncached_mac_frame_syncs_its_partial_edge_pages() {
        const MIB: u64 = 1 << 20;
        const PAGE: u64 = 16 << 10;
        // A 4K ProRes 4444 frame (5,890,000 bytes) starting mid-block.
        let frame = 5_890_000;
        let p = mac_uncached_pieces(frame, frame, MIB, PAGE);
        let total: usize = p.iter().map(|x| x.1).sum();
        assert_eq!(total as u64, frame);
        assert_eq!(
            p.first().unwrap(),
            &(frame, (6 * MIB - frame) as usize, true)
        );
        assert!(p[1..p.len() - 1].iter().all(|x| x.1 as u64 == MIB && !x.2));
        let last = p.last().unwrap();
        assert_eq!(last.0 % MIB, 0);
        assert!(last.2);
        // Page-aligned edges stay UNSTABLE; a whole block is never synced.
        let aligned = mac_uncached_pieces(3 * PAGE, 2 * MIB, MIB, PAGE);
        assert!(aligned.iter().all(|x| !x.2));
        assert_eq!(
            mac_uncached_pieces(0, MIB, MIB, PAGE),
            vec![(0, MIB as usize, false)]
        );
    }
}
