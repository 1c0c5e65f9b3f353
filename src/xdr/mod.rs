//! XDR (RFC 4506) encoding and decoding.
//!
//! The decoder borrows from the received record: opaque data and strings come
//! back as slices of the input, so a WRITE payload or a file name is never
//! copied while it is parsed. The encoder appends to a `Vec<u8>` that callers
//! reuse across replies.

use thiserror::Error;

/// Why a buffer could not be decoded. The RPC layer turns any of these into
/// GARBAGE_ARGS (or NFS4ERR_BADXDR inside a COMPOUND).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum XdrError {
    #[error("XDR data ends early: needed {needed} bytes at offset {offset}, {available} left")]
    Short {
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("XDR length {len} at offset {offset} exceeds the limit {limit}")]
    TooLong {
        offset: usize,
        len: usize,
        limit: usize,
    },
    #[error("XDR boolean at offset {offset} is {value}, not 0 or 1")]
    BadBool { offset: usize, value: u32 },
    /// A union discriminant or enum value the type does not have, or a
    /// length that disagrees with what the transport found.
    #[error("XDR value outside its type")]
    BadValue,
}

pub type XdrResult<T> = Result<T, XdrError>;

/// Cursor over a borrowed XDR buffer.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn padded(len: usize) -> usize {
    (len + 3) & !3
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The undecoded rest of the buffer.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn take(&mut self, n: usize) -> XdrResult<&'a [u8]> {
        if self.remaining() < n {
            return Err(XdrError::Short {
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u32(&mut self) -> XdrResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i32(&mut self) -> XdrResult<i32> {
        Ok(self.u32()? as i32)
    }

    pub fn u64(&mut self) -> XdrResult<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub fn i64(&mut self) -> XdrResult<i64> {
        Ok(self.u64()? as i64)
    }

    pub fn bool(&mut self) -> XdrResult<bool> {
        let offset = self.pos;
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(XdrError::BadBool { offset, value }),
        }
    }

    /// Fixed-length opaque (`opaque x[N]`).
    pub fn fixed(&mut self, n: usize) -> XdrResult<&'a [u8]> {
        let s = self.take(n)?;
        self.take(padded(n) - n)?;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self) -> XdrResult<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.fixed(N)?);
        Ok(a)
    }

    /// Variable-length opaque (`opaque x<limit>`), borrowed from the input.
    pub fn opaque(&mut self, limit: usize) -> XdrResult<&'a [u8]> {
        let offset = self.pos;
        let len = self.u32()? as usize;
        if len > limit {
            return Err(XdrError::TooLong { offset, len, limit });
        }
        self.fixed(len)
    }

    /// Length prefix of an array, checked against a limit and against the
    /// bytes left (each element takes at least `min_elem` bytes), so a hostile
    /// count cannot make us allocate.
    pub fn count(&mut self, limit: usize, min_elem: usize) -> XdrResult<usize> {
        let offset = self.pos;
        let len = self.u32()? as usize;
        let fits = self.remaining() / min_elem.max(1);
        if len > limit || len > fits {
            return Err(XdrError::TooLong {
                offset,
                len,
                limit: limit.min(fits),
            });
        }
        Ok(len)
    }

    pub fn skip(&mut self, n: usize) -> XdrResult<()> {
        self.take(n).map(|_| ())
    }
}

/// Appends XDR to a growable buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Encoder { buf: Vec::new() }
    }

    pub fn with_buffer(buf: Vec<u8>) -> Self {
        Encoder { buf }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn i32(&mut self, v: i32) {
        self.u32(v as u32);
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.u64(v as u64);
    }

    pub fn bool(&mut self, v: bool) {
        self.u32(v as u32);
    }

    fn pad(&mut self, len: usize) {
        let p = padded(len) - len;
        self.buf.extend_from_slice(&[0u8; 3][..p]);
    }

    pub fn fixed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        self.pad(data.len());
    }

    pub fn opaque(&mut self, data: &[u8]) {
        self.u32(data.len() as u32);
        self.fixed(data);
    }

    pub fn string(&mut self, s: &str) {
        self.opaque(s.as_bytes());
    }

    /// Reserves a u32 slot to fill in later (e.g. a length or a status known
    /// only after the body is encoded); returns its offset.
    pub fn placeholder(&mut self) -> usize {
        let at = self.buf.len();
        self.u32(0);
        at
    }

    pub fn patch_u32(&mut self, at: usize, v: u32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Zero bytes needed after `len` bytes of opaque data.
    pub fn padding_for(len: usize) -> &'static [u8] {
        &[0u8; 3][..padded(len) - len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut e = Encoder::new();
        e.u32(7);
        e.u64(u64::MAX - 1);
        e.opaque(b"hello");
        e.bool(true);
        e.string("");
        assert_eq!(e.len(), 4 + 8 + 4 + 8 + 4 + 4);
        let mut d = Decoder::new(&e.buf);
        assert_eq!(d.u32().unwrap(), 7);
        assert_eq!(d.u64().unwrap(), u64::MAX - 1);
        assert_eq!(d.opaque(16).unwrap(), b"hello");
        assert!(d.bool().unwrap());
        assert_eq!(d.opaque(0).unwrap(), b"");
        assert_eq!(d.remaining(), 0);
    }

    #[test]
    fn hostile_lengths_are_errors() {
        let mut e = Encoder::new();
        e.u32(0x7fff_ffff);
        let mut d = Decoder::new(&e.buf);
        assert!(matches!(d.opaque(1024), Err(XdrError::TooLong { .. })));
        let mut d = Decoder::new(&e.buf);
        assert!(matches!(d.count(1 << 30, 4), Err(XdrError::TooLong { .. })));
        let mut d = Decoder::new(&[0, 0, 0, 2]);
        assert!(matches!(d.bool(), Err(XdrError::BadBool { .. })));
        let mut d = Decoder::new(&[0, 0, 0, 9, 1, 2]);
        assert!(matches!(d.opaque(100), Err(XdrError::Short { .. })));
    }
}
