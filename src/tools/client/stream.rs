//! Pipelined streams over one connection: WRITEs (copied or lent to the
//! socket, or shaped as a Mac with its cache off) and READs, many in
//! flight, as the benches and `aja` drive the server. Part of the client.

use super::*;

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
