//! A reply as the transport sends it (a list of buffers for one `writev`,
//! file data in parts of its own) and the body a program encodes its
//! results into.

use crate::xdr::Encoder;

/// One piece of a reply as it goes on the wire.
#[derive(Debug)]
pub enum ReplyPart {
    Bytes(Vec<u8>),
    /// File data, sent as its own iovec so it is never copied into a
    /// header buffer. Its owner may be a pooled buffer that goes back to
    /// its pool once the reply is written.
    Data(bytes::Bytes),
}

impl ReplyPart {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ReplyPart::Bytes(b) => b,
            ReplyPart::Data(b) => b,
        }
    }
}

/// A reply without its record mark, as a list of buffers for one `writev`.
#[derive(Debug, Default)]
pub struct Reply {
    pub parts: Vec<ReplyPart>,
}

impl From<Vec<u8>> for Reply {
    /// A reply of one buffer.
    fn from(bytes: Vec<u8>) -> Reply {
        Reply {
            parts: vec![ReplyPart::Bytes(bytes)],
        }
    }
}

impl Reply {
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.as_slice().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The reply's first `at` bytes, in one buffer (the head of a reply
    /// cut short).
    pub fn prefix(&self, at: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(at + 16);
        for p in &self.parts {
            if v.len() >= at {
                break;
            }
            v.extend_from_slice(p.as_slice());
        }
        v.truncate(at);
        v
    }

    /// The whole reply in one buffer (tests and tools).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        for p in &self.parts {
            v.extend_from_slice(p.as_slice());
        }
        v
    }
}

/// Where a program writes its results: XDR into `enc`, and out-of-line data
/// buffers (a READ's bytes) after which encoding continues into a fresh
/// buffer. Offsets given to [`ReplyBody::patch_u32`] count from the start of
/// the reply, across parts.
#[derive(Debug)]
pub struct ReplyBody {
    parts: Vec<ReplyPart>,
    /// Bytes held in `parts`.
    base: usize,
    enc: Encoder,
    /// What the reply waits for before it may be sent.
    hold: Option<super::Hold>,
}

impl ReplyBody {
    pub(super) fn new(head: Vec<u8>) -> Self {
        ReplyBody {
            parts: Vec::new(),
            base: 0,
            enc: Encoder::with_buffer(head),
            hold: None,
        }
    }

    /// A body for tests and tools that encode results outside an RPC.
    pub fn detached() -> Self {
        Self::new(Vec::new())
    }

    pub fn enc(&mut self) -> &mut Encoder {
        &mut self.enc
    }

    /// Appends `data` as XDR opaque data (length, bytes, padding) without
    /// copying the bytes.
    pub fn opaque_data(&mut self, data: impl Into<bytes::Bytes>) {
        let data = data.into();
        let len = data.len();
        self.enc.u32(len as u32);
        if len == 0 {
            return;
        }
        let head = std::mem::take(&mut self.enc.buf);
        self.base += head.len() + len;
        self.parts.push(ReplyPart::Bytes(head));
        self.parts.push(ReplyPart::Data(data));
        self.enc.buf.extend_from_slice(Encoder::padding_for(len));
    }

    /// Bytes encoded so far (all parts).
    pub fn len(&self) -> usize {
        self.base + self.enc.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves a u32 to fill in later; returns its offset.
    pub fn placeholder(&mut self) -> usize {
        let at = self.len();
        self.enc.u32(0);
        at
    }

    pub fn patch_u32(&mut self, at: usize, v: u32) {
        if at >= self.base {
            self.enc.patch_u32(at - self.base, v);
            return;
        }
        let mut start = 0;
        for part in &mut self.parts {
            let ReplyPart::Bytes(b) = part else {
                start += part.as_slice().len();
                continue;
            };
            if at < start + b.len() {
                b[at - start..at - start + 4].copy_from_slice(&v.to_be_bytes());
                return;
            }
            start += b.len();
        }
    }

    /// The u32 encoded at offset `at` (a result's status word), if any.
    pub fn u32_at(&self, at: usize) -> Option<u32> {
        let word = |b: &[u8], i: usize| Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?));
        if at >= self.base {
            return word(&self.enc.buf, at - self.base);
        }
        let mut start = 0;
        for part in &self.parts {
            let b = part.as_slice();
            if at < start + b.len() {
                return word(b, at - start);
            }
            start += b.len();
        }
        None
    }

    /// The bytes encoded since offset `at`, if they are all in the buffer
    /// being encoded (no data part after it).
    pub fn bytes_since(&self, at: usize) -> Option<Vec<u8>> {
        (at >= self.base).then(|| self.enc.buf[at - self.base..].to_vec())
    }

    /// Drops what was encoded after offset `at`, which must lie in the
    /// buffer being encoded (no data part after it). Returns false if not.
    pub fn truncate(&mut self, at: usize) -> bool {
        if at < self.base {
            return false;
        }
        self.enc.buf.truncate(at - self.base);
        true
    }

    /// Holds the finished reply until `hold` lets it go (one hold a reply:
    /// a program with several things to wait for joins them in one).
    pub fn hold(&mut self, hold: super::Hold) {
        debug_assert!(self.hold.is_none(), "a reply held twice");
        self.hold = Some(hold);
    }

    /// The reply's hold, taken (to be wrapped and set again).
    pub fn take_hold(&mut self) -> Option<super::Hold> {
        self.hold.take()
    }

    pub(crate) fn finish(mut self) -> Reply {
        let tail = std::mem::take(&mut self.enc.buf);
        if !tail.is_empty() {
            self.parts.push(ReplyPart::Bytes(tail));
        }
        Reply { parts: self.parts }
    }
}
