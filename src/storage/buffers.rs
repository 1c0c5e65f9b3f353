//! Reusable buffers for READ data: a fresh 1 MiB buffer per READ costs
//! page faults, a pooled one none. Used by the pool's buffered READ path.

use std::sync::Arc;

/// Read buffers kept for reuse: enough for every READ in flight on a few
/// busy connections (64 × 1 MiB at most).
pub(super) const READ_BUFFERS_KEPT: usize = 64;

/// Buffers for READ data. A fresh 1 MiB `Vec` per READ costs an allocation
/// that the allocator zero-fills (or maps and faults in page by page); a
/// reused one is already resident.
#[derive(Debug)]
pub(super) struct BufferPool {
    pub(super) free: parking_lot::Mutex<Vec<Vec<u8>>>,
    pub(super) keep: usize,
}

impl BufferPool {
    pub(super) fn new(keep: usize) -> BufferPool {
        BufferPool {
            free: parking_lot::Mutex::new(Vec::new()),
            keep,
        }
    }

    /// A buffer of `len` bytes whose content is left over from earlier use.
    pub(super) fn take(self: &Arc<Self>, len: usize) -> PooledBuf {
        let mut buf = self.free.lock().pop().unwrap_or_default();
        // Only growth writes zeros: a reused buffer keeps its bytes.
        buf.resize(len, 0);
        PooledBuf {
            buf,
            pool: self.clone(),
        }
    }
}

/// A buffer that returns to its pool when dropped.
#[derive(Debug)]
pub(super) struct PooledBuf {
    pub(super) buf: Vec<u8>,
    pub(super) pool: Arc<BufferPool>,
}

impl std::ops::Deref for PooledBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl std::ops::DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock();
        if free.len() < self.pool.keep {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}
