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
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
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
