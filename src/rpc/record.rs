//! RPC record marking (RFC 5531 §11): each record is one or more fragments,
//! each preceded by a 4-byte header whose top bit marks the last fragment and
//! whose low 31 bits give the fragment length.

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

pub const LAST_FRAGMENT: u32 = 0x8000_0000;

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("record of at least {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: u64, limit: usize },
    #[error("connection closed in the middle of a record ({got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one whole record into `buf` (cleared first). Returns `Ok(false)` on a
/// clean end of stream between records.
pub async fn read_record<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<bool, RecordError> {
    buf.clear();
    let Some(first) = read_fragment_header(reader, buf.len(), limit).await? else {
        return Ok(false);
    };
    finish_record(reader, buf, first.len, first.last, limit).await?;
    Ok(true)
}

/// One fragment header: the fragment's length and whether it ends its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub len: usize,
    pub last: bool,
}

/// Reads a fragment header; `have` bytes of the record came before it.
/// `Ok(None)` is a clean end of stream before a new record.
pub async fn read_fragment_header<R: AsyncRead + Unpin>(
    reader: &mut R,
    have: usize,
    limit: usize,
) -> Result<Option<Fragment>, RecordError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut header[got..]).await?;
        if n == 0 {
            if got == 0 && have == 0 {
                return Ok(None);
            }
            return Err(RecordError::Truncated {
                got: have + got,
                expected: have + 4,
            });
        }
        got += n;
    }
    let word = u32::from_be_bytes(header);
    let len = (word & !LAST_FRAGMENT) as usize;
    let total = have as u64 + len as u64;
    if total > limit as u64 {
        return Err(RecordError::TooLarge { size: total, limit });
    }
    Ok(Some(Fragment {
        len,
        last: word & LAST_FRAGMENT != 0,
    }))
}

/// Appends exactly `n` bytes from `reader` to `buf`.
pub async fn read_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    n: usize,
) -> Result<(), RecordError> {
    // Read into spare capacity: no zero-filling of a 1 MiB payload, and a
    // reused buffer keeps its pages (no page faults per record).
    let expected = buf.len() + n;
    buf.reserve(n);
    let mut limited = reader.take(n as u64);
    while buf.len() < expected {
        if limited.read_buf(buf).await? == 0 {
            return Err(RecordError::Truncated {
                got: buf.len(),
                expected,
            });
        }
    }
    Ok(())
}

/// Reads the rest of a record of which `left` bytes of the current
/// fragment are still to come (`last`: it is the record's last fragment).
pub async fn finish_record<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    left: usize,
    last: bool,
    limit: usize,
) -> Result<(), RecordError> {
    let (mut left, mut last) = (left, last);
    loop {
        read_into(reader, buf, left).await?;
        if last {
            return Ok(());
        }
        let Some(next) = read_fragment_header(reader, buf.len(), limit).await? else {
            return Err(RecordError::Truncated {
                got: buf.len(),
                expected: buf.len() + 4,
            });
        };
        left = next.len;
        last = next.last;
    }
}

/// The record mark for a single-fragment record of `len` bytes.
pub fn record_mark(len: usize) -> [u8; 4] {
    (LAST_FRAGMENT | len as u32).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(data: &[u8], last: bool) -> Vec<u8> {
        let mut v = ((data.len() as u32) | if last { LAST_FRAGMENT } else { 0 })
            .to_be_bytes()
            .to_vec();
        v.extend_from_slice(data);
        v
    }

    #[tokio::test]
    async fn multi_fragment_records_are_joined() {
        let mut wire = frag(b"abc", false);
        wire.extend(frag(b"defg", true));
        wire.extend(frag(b"x", true));
        let mut r = &wire[..];
        let mut buf = Vec::new();
        assert!(read_record(&mut r, &mut buf, 100).await.unwrap());
        assert_eq!(buf, b"abcdefg");
        assert!(read_record(&mut r, &mut buf, 100).await.unwrap());
        assert_eq!(buf, b"x");
        assert!(!read_record(&mut r, &mut buf, 100).await.unwrap());
    }

    #[tokio::test]
    async fn oversized_and_truncated_records_fail() {
        let wire = (LAST_FRAGMENT | 0x7fff_ffff).to_be_bytes();
        let mut r = &wire[..];
        let mut buf = Vec::new();
        assert!(matches!(
            read_record(&mut r, &mut buf, 1 << 20).await,
            Err(RecordError::TooLarge { .. })
        ));
        let mut wire = frag(b"abcdef", true);
        wire.truncate(7);
        let mut r = &wire[..];
        assert!(matches!(
            read_record(&mut r, &mut buf, 100).await,
            Err(RecordError::Truncated { .. })
        ));
    }
}
