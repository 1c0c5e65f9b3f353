//! Durable writes of the journal's records: each record is on the disk when
//! its write returns.
//!
//! On Linux the journal is written with `O_DIRECT | O_DSYNC`: whole 4 KiB
//! blocks from an aligned buffer, the start of the tail's block (the
//! previous records' bytes, kept in memory) written again before each new
//! record. The file system then sends the blocks and one cache flush, and
//! skips the page cache and its write-back (`fdatasync` of a buffered
//! write looks for dirty pages, builds their I/O and waits for it): less
//! time and CPU per record (perf/README.md finding 56).
//!
//! Where the file system refuses `O_DIRECT` (tmpfs on older kernels, some
//! FUSE file systems) and on other systems, a record is a buffered write
//! and `fdatasync` (`F_FULLFSYNC` on macOS), as before.
//!
//! A block written again holds the same bytes before the tail as the disk
//! already has, so a write torn between sectors leaves every earlier
//! record whole, as the page cache's write of the same block would.

use std::fs::File;
use std::io;
use std::path::Path;

/// The unit of a direct write: a multiple of any disk's logical block.
const BLOCK: u64 = 4096;

/// Writes records to the journal file and makes each durable.
pub(super) struct DurableAppend {
    /// The journal opened with `O_DIRECT | O_DSYNC`, while it works.
    direct: Option<Direct>,
}

struct Direct {
    file: File,
    /// The bytes of the tail's block before the tail.
    head: Vec<u8>,
    /// Page-aligned, as `O_DIRECT` wants memory to be; grows to the
    /// largest write so far.
    buf: memmap2::MmapMut,
}

impl DurableAppend {
    /// Direct writes to `path` where the file system takes them.
    pub(super) fn open(path: &Path) -> DurableAppend {
        let direct = open_direct(path).and_then(|file| {
            Some(Direct {
                file,
                head: Vec::new(),
                buf: memmap2::MmapMut::map_anon(BLOCK as usize).ok()?,
            })
        });
        DurableAppend { direct }
    }

    /// Whether records go out with `O_DIRECT | O_DSYNC`.
    #[cfg(all(test, target_os = "linux"))]
    pub(super) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The next record starts a block (the journal starts a region).
    pub(super) fn restart(&mut self) {
        if let Some(d) = &mut self.direct {
            d.head.clear();
        }
    }

    /// Writes `rec` at `at` (the tail: just after the previous record, or
    /// a region's start after [`DurableAppend::restart`]) and returns once
    /// it is durable. `buffered` is the journal's ordinary handle.
    pub(super) fn write(&mut self, buffered: &File, rec: &[u8], at: u64) -> io::Result<()> {
        if let Some(d) = &mut self.direct {
            match d.write(rec, at) {
                Ok(()) => return Ok(()),
                // Refused after all (EINVAL: alignment or the file system),
                // or no memory for a larger aligned buffer: buffered from
                // now on.
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL)
                        || e.kind() == io::ErrorKind::OutOfMemory =>
                {
                    tracing::warn!(error = %e, "journal: direct writes refused, using fdatasync");
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        write_all_at(buffered, rec, at)?;
        buffered.sync_data()
    }
}

impl Direct {
    fn write(&mut self, rec: &[u8], at: u64) -> io::Result<()> {
        let start = at - self.head.len() as u64;
        debug_assert_eq!(start % BLOCK, 0, "the kept head starts a block");
        let end = self.head.len() + rec.len();
        let padded = end.next_multiple_of(BLOCK as usize);
        if self.buf.len() < padded {
            self.buf = memmap2::MmapMut::map_anon(padded)?;
        }
        let buf = &mut self.buf[..padded];
        buf[..self.head.len()].copy_from_slice(&self.head);
        buf[self.head.len()..end].copy_from_slice(rec);
        buf[end..].fill(0);
        write_all_at(&self.file, buf, start)?;
        let last_block = end - end % BLOCK as usize;
        self.head.clear();
        self.head.extend_from_slice(&buf[last_block..end]);
        Ok(())
    }
}

#[cfg(unix)]
pub(super) fn write_all_at(file: &File, buf: &[u8], at: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(buf, at)
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
        .inspect_err(|e| tracing::info!(error = %e, "journal: no direct writes, using fdatasync"))
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<File> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block logic of direct writes over an ordinary file.
    fn direct_over(path: &Path) -> Direct {
        Direct {
            file: std::fs::OpenOptions::new().write(true).open(path).unwrap(),
            head: Vec::new(),
            buf: memmap2::MmapMut::map_anon(BLOCK as usize).unwrap(),
        }
    }

    /// The block logic over an ordinary file: each write covers whole
    /// blocks from a block's start, and the file reads as the records one
    /// after another, zeros after the tail up to the block's end.
    #[test]
    fn records_of_any_size_land_whole_and_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        std::fs::write(&path, vec![0xeeu8; 1 << 20]).unwrap();
        let mut d = direct_over(&path);
        let mut expected = Vec::new();
        let mut x = 7u32;
        // Sizes from 1 byte to several blocks, some ending on a block's end.
        for i in 0..200u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let len = match i % 5 {
                0 => BLOCK as usize - expected.len() % BLOCK as usize,
                1 => 1,
                _ => 1 + (x >> 8) as usize % 9000,
            };
            let rec: Vec<u8> = (0..len).map(|k| (i as usize * 31 + k) as u8).collect();
            d.write(&rec, expected.len() as u64).unwrap();
            expected.extend_from_slice(&rec);
            let on_disk = std::fs::read(&path).unwrap();
            assert_eq!(&on_disk[..expected.len()], &expected[..], "record {i}");
            let block_end = expected.len().next_multiple_of(BLOCK as usize);
            assert!(on_disk[expected.len()..block_end].iter().all(|&b| b == 0));
            assert_eq!(d.head.len(), expected.len() % BLOCK as usize);
        }
    }

    /// After a restart the next record goes to a region's start, and the
    /// blocks after it are never written.
    #[test]
    fn a_restart_begins_at_a_fresh_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        std::fs::write(&path, vec![0xeeu8; 64 << 10]).unwrap();
        let mut out = DurableAppend {
            direct: Some(direct_over(&path)),
        };
        let buffered = File::open(&path).unwrap();
        out.write(&buffered, &[1; 100], 0).unwrap();
        out.restart();
        let second = 32 << 10;
        out.write(&buffered, &[2; 10], second).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert!(on_disk[..100].iter().all(|&b| b == 1));
        assert!(on_disk[second as usize..][..10].iter().all(|&b| b == 2));
        let after = second as usize + BLOCK as usize;
        assert!(
            on_disk[after..].iter().all(|&b| b == 0xee),
            "nothing past the block"
        );
    }
}
