//! `markbase-nfs aja`: AJA-System-Test-style sustained runs. One file is
//! written frame by frame, sequentially, then read back; every frame's time
//! goes into an hdrhistogram, and the run reports sustained MB/s, p50/p99/max
//! frame times and frames over budget at common frame rates and at the
//! 600 MB/s target, plus a CSV of frame times and their graph (`graph`).
//!
//! Two ways to reach the storage: the project's own NFSv4 client over
//! loopback (by default against a server it starts on a temporary catalog),
//! or `--mount DIR` for a volume the OS has mounted (O_DIRECT on Linux,
//! F_NOCACHE on macOS), so the same run works on an editor's Mac.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;

mod graph;

use crate::tools::client::{pipelined_reads, Create, Nfs4Client, OpenFile, WriteStream};
use crate::tools::stalls::{self, MachineStalls, Stall, StallWitness};

/// Frame sizes of AJA's presets, in bytes.
pub const PRESETS: &[(&str, u64, &str)] = &[
    ("4k-prores-4444", 5_890_000, "4K DCI ProRes 4444"),
    ("4k-prores-4444xq", 8_840_000, "4K DCI ProRes 4444 XQ"),
    ("uhd-prores-4444", 5_500_000, "UHD ProRes 4444"),
];

pub const FRAME_RATES: &[f64] = &[24.0, 25.0, 30.0, 50.0, 60.0];

/// Where the frames go.
#[derive(Debug, Clone)]
pub enum Target {
    /// The built-in client against a server at this address.
    Nfs(SocketAddr),
    /// A file in a folder mounted by the OS.
    Mount(PathBuf),
}

#[derive(Debug, Clone)]
pub struct AjaOptions {
    pub frame_bytes: u64,
    pub file_bytes: u64,
    pub target: Target,
    /// Fail (non-zero exit) when either direction is below this MB/s.
    pub target_mbps: Option<f64>,
    pub csv: PathBuf,
    pub svg: PathBuf,
    /// WRITE/READ size and how many are in flight per frame.
    pub chunk: usize,
    pub inflight: usize,
    pub progress: bool,
    /// Folder on the server's disk for the same-run local baselines (the
    /// same frames with buffered `pwrite` + fdatasync, and with O_DIRECT);
    /// None skips them.
    pub baseline: Option<PathBuf>,
    /// The built-in client lends its payload pages to the socket instead
    /// of copying them (Linux; see [`WriteStream::lend_payload`]).
    pub lend_payloads: bool,
    /// The built-in client writes as a Mac with its cache off: frames in
    /// 1 MiB-aligned pieces, the partial 16 KiB pages at a frame's edges
    /// FILE_SYNC (see [`WriteStream::write_like_mac_uncached`]).
    pub mac_uncached: bool,
}

/// Per-direction results.
#[derive(Debug, Clone)]
pub struct Direction {
    pub frames: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Frame times in microseconds.
    pub times_us: Vec<u64>,
    /// When each frame started, in microseconds since the run began.
    pub starts_us: Vec<u64>,
    /// How much of each frame the machine was stalled (see
    /// [`crate::tools::stalls`]), in microseconds; empty without a witness.
    pub stalled_us: Vec<u64>,
    /// Time of the final COMMIT/fsync (writes only).
    pub flush: Duration,
}

impl Direction {
    pub fn mbps(&self) -> f64 {
        self.bytes as f64 / (self.elapsed + self.flush).as_secs_f64() / 1e6
    }

    fn histogram(&self) -> Histogram<u64> {
        frame_histogram(self.times_us.iter().copied())
    }

    pub fn percentile_ms(&self, q: f64) -> f64 {
        self.histogram().value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.histogram().max() as f64 / 1000.0
    }

    pub fn over_budget(&self, budget: Duration) -> usize {
        let b = budget.as_micros() as u64;
        self.times_us.iter().filter(|t| **t > b).count()
    }

    /// Places the machine's stalls on the frames.
    fn mark_stalls(&mut self, stalls: &[Stall]) {
        self.stalled_us = self
            .starts_us
            .iter()
            .zip(&self.times_us)
            .map(|(s, t)| {
                stalls::overlap(stalls, Duration::from_micros(*s), Duration::from_micros(*t))
                    .as_micros() as u64
            })
            .collect();
    }

    /// The frames no machine stall touched: (their count, their p99 in ms,
    /// how many of them are over `budget`).
    pub fn unstalled(&self, budget: Duration) -> (usize, f64, usize) {
        let clear = || {
            self.times_us
                .iter()
                .zip(&self.stalled_us)
                .filter(|(_, st)| **st == 0)
                .map(|(t, _)| *t)
        };
        let h = frame_histogram(clear());
        let b = budget.as_micros() as u64;
        let over = clear().filter(|t| *t > b).count();
        let n = h.len() as usize;
        let p99 = if n > 0 {
            h.value_at_quantile(0.99) as f64 / 1000.0
        } else {
            0.0
        };
        (n, p99, over)
    }
}

/// Frame times (µs) in a histogram.
fn frame_histogram(times_us: impl Iterator<Item = u64>) -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    for t in times_us {
        let _ = h.record(t.max(1));
    }
    h
}

#[derive(Debug, Clone)]
pub struct AjaReport {
    pub frame_bytes: u64,
    /// How the frames were moved: which client, copying or not.
    pub client: &'static str,
    pub write: Direction,
    pub read: Direction,
    /// Same-run local baselines: (name, write, read).
    pub baselines: Vec<(&'static str, Direction, Direction)>,
    /// What the stall witness saw over the whole run; None when its thread
    /// could not start.
    pub stalls: Option<MachineStalls>,
    /// WRITEs sent FILE_SYNC (writing as a Mac with its cache off).
    pub file_sync_writes: u64,
}

/// Moves frames to and from the storage under test.
trait FrameIo {
    fn write_frame(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes everything written durable (COMMIT / fsync).
    fn flush(&mut self) -> io::Result<()>;
    fn read_frame(&mut self, offset: u64, len: u64) -> io::Result<()>;
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

struct NfsFrames {
    client: Nfs4Client,
    file: OpenFile,
    stream: WriteStream,
    chunk: usize,
    inflight: usize,
    /// Write as a Mac with its cache off; counts its FILE_SYNC WRITEs.
    mac_uncached: Option<Arc<AtomicU64>>,
}

/// The page of the Mac's partial-page rule: 16 KiB on Apple silicon.
const MAC_PAGE: u64 = 16 << 10;

impl FrameIo for NfsFrames {
    fn write_frame(&mut self, offset: u64, len: u64) -> io::Result<()> {
        match &self.mac_uncached {
            Some(synced) => {
                let n = self
                    .stream
                    .write_like_mac_uncached(
                        &mut self.client.rpc,
                        offset,
                        len,
                        self.inflight,
                        self.chunk as u64,
                        MAC_PAGE,
                    )
                    .map_err(io_err)?;
                synced.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
            None => self
                .stream
                .write(&mut self.client.rpc, offset, len, self.inflight)
                .map_err(io_err),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.client
            .commit(&self.file.fh)
            .map(|_| ())
            .map_err(io_err)
    }

    fn read_frame(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let got = pipelined_reads(
            &mut self.client.rpc,
            &self.file,
            offset,
            len,
            self.chunk,
            self.inflight,
        )
        .map_err(io_err)?;
        if got != len {
            return Err(io_err(format!("short read at {offset}: {got} of {len}")));
        }
        Ok(())
    }
}

/// A buffer aligned for O_DIRECT.
struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(len.max(4096), 4096).expect("layout");
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        AlignedBuf { ptr, layout }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for layout.size() bytes for our lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

struct MountFrames {
    file: File,
    buf: AlignedBuf,
}

/// How a local or mounted test file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caching {
    /// Bypass the (client's) cache as AJA does.
    Uncached,
    /// Plain buffered I/O through the page cache.
    Buffered,
}

impl MountFrames {
    fn create(path: &Path, frame_bytes: u64, caching: Caching) -> anyhow::Result<MountFrames> {
        let file = match caching {
            Caching::Uncached => open_uncached(path),
            Caching::Buffered => create_options().open(path),
        }
        .with_context(|| format!("creating {}", path.display()))?;
        let mut buf = AlignedBuf::new((frame_bytes as usize).div_ceil(4096) * 4096);
        for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
            *b = (i * 31 % 251) as u8;
        }
        Ok(MountFrames { file, buf })
    }
}

/// Read-write, created or truncated: how every test file is opened.
fn create_options() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true).create(true).truncate(true);
    o
}

/// Opens the test file bypassing the client's cache where the OS allows,
/// as AJA does: O_DIRECT on Linux (falling back to buffered I/O where the
/// file system refuses it), F_NOCACHE on macOS.
fn open_uncached(path: &Path) -> io::Result<File> {
    let o = create_options();
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut direct = o.clone();
        direct.custom_flags(libc::O_DIRECT);
        if let Ok(f) = direct.open(path) {
            return Ok(f);
        }
    }
    let f = o.open(path)?;
    #[cfg(target_os = "macos")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on an fd we own, with an integer argument.
        unsafe {
            libc::fcntl(f.as_raw_fd(), libc::F_NOCACHE, 1);
        }
    }
    Ok(f)
}

impl FrameIo for MountFrames {
    fn write_frame(&mut self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        // Sizes are rounded up to the 4 KiB that O_DIRECT needs.
        let n = (len as usize).div_ceil(4096) * 4096;
        let buf = &self.buf.as_slice()[..n];
        self.file.write_all_at(buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn read_frame(&mut self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let n = (len as usize).div_ceil(4096) * 4096;
        let buf = &mut self.buf.as_mut_slice()[..n];
        let mut got = 0;
        while got < n {
            let k = self.file.read_at(&mut buf[got..], offset + got as u64)?;
            if k == 0 {
                break;
            }
            got += k;
        }
        if got < len as usize {
            return Err(io_err(format!("short read at {offset}: {got} of {len}")));
        }
        Ok(())
    }
}

fn run_direction(
    io: &mut dyn FrameIo,
    frames: u64,
    frame_bytes: u64,
    write: bool,
    progress: bool,
    epoch: Instant,
) -> anyhow::Result<Direction> {
    let stride = frame_bytes.div_ceil(4096) * 4096;
    let mut times = Vec::with_capacity(frames as usize);
    let mut starts = Vec::with_capacity(frames as usize);
    let start = Instant::now();
    let mut last_report = Instant::now();
    for i in 0..frames {
        let t = Instant::now();
        starts.push(t.saturating_duration_since(epoch).as_micros() as u64);
        if write {
            io.write_frame(i * stride, frame_bytes)
        } else {
            io.read_frame(i * stride, frame_bytes)
        }
        .with_context(|| format!("frame {i} ({})", if write { "write" } else { "read" }))?;
        times.push(t.elapsed().as_micros() as u64);
        if progress && last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let mbps = (i + 1) as f64 * frame_bytes as f64 / start.elapsed().as_secs_f64() / 1e6;
            eprint!(
                "\r{} frame {}/{} — {:.0} MB/s   ",
                if write { "write" } else { "read " },
                i + 1,
                frames,
                mbps
            );
            let _ = io::stderr().flush();
        }
    }
    let elapsed = start.elapsed();
    let flush = if write {
        let t = Instant::now();
        io.flush().context("final COMMIT/fsync")?;
        t.elapsed()
    } else {
        Duration::ZERO
    };
    if progress {
        eprintln!();
    }
    Ok(Direction {
        frames,
        bytes: frames * frame_bytes,
        elapsed,
        times_us: times,
        starts_us: starts,
        stalled_us: Vec::new(),
        flush,
    })
}

/// Runs the write pass then the read pass.
pub fn run(opts: &AjaOptions) -> anyhow::Result<AjaReport> {
    if opts.frame_bytes == 0 || opts.file_bytes < opts.frame_bytes {
        bail!("file size must hold at least one frame");
    }
    let frames = opts.file_bytes / opts.frame_bytes;
    let epoch = Instant::now();
    let witness = StallWitness::start(epoch)
        .map_err(|e| tracing::warn!(error = %e, "no stall witness: frame times are not set against machine stalls"))
        .ok();
    let how;
    let file_syncs = Arc::new(AtomicU64::new(0));
    let mut io: Box<dyn FrameIo> = match &opts.target {
        Target::Nfs(addr) => {
            let mut client = Nfs4Client::connect(*addr, "markbase-aja")
                .map_err(|e| anyhow::anyhow!("connecting to {addr}: {e}"))?;
            let root = client
                .lookup("")
                .map_err(|e| anyhow::anyhow!("looking up the root: {e}"))?;
            let name = format!("aja-{}.mov", std::process::id());
            let file = client
                .open(&root, &name, Create::Unchecked { mode: 0o644 }, 3)
                .map_err(|e| anyhow::anyhow!("creating {name}: {e}"))?;
            let mut stream = WriteStream::new(&client.rpc, &file, opts.chunk, 0);
            how = if opts.mac_uncached {
                "built-in NFSv4 client writing as a Mac with its cache off (partial 16 KiB pages FILE_SYNC)"
            } else if opts.lend_payloads && stream.lend_payload() {
                "built-in NFSv4 client, payload pages lent to the socket (no client copy)"
            } else {
                "built-in NFSv4 client, payloads copied into the socket"
            };
            Box::new(NfsFrames {
                client,
                file,
                stream,
                chunk: opts.chunk,
                inflight: opts.inflight,
                mac_uncached: opts.mac_uncached.then(|| file_syncs.clone()),
            })
        }
        Target::Mount(dir) => {
            how = "a volume the OS mounted, its cache bypassed (F_NOCACHE / O_DIRECT)";
            let path = dir.join(format!("aja-{}.mov", std::process::id()));
            Box::new(MountFrames::create(
                &path,
                opts.frame_bytes,
                Caching::Uncached,
            )?)
        }
    };
    let mut write = run_direction(
        io.as_mut(),
        frames,
        opts.frame_bytes,
        true,
        opts.progress,
        epoch,
    )?;
    let mut read = run_direction(
        io.as_mut(),
        frames,
        opts.frame_bytes,
        false,
        opts.progress,
        epoch,
    )?;
    drop(io);
    let mut baselines = Vec::new();
    if let Some(dir) = &opts.baseline {
        for (name, caching) in [
            ("local pwrite+fdatasync", Caching::Buffered),
            ("local O_DIRECT (disk)", Caching::Uncached),
        ] {
            if opts.progress {
                eprintln!("baseline: {name}");
            }
            let path = dir.join(format!("aja-baseline-{}.mov", std::process::id()));
            let mut local = MountFrames::create(&path, opts.frame_bytes, caching)?;
            let w = run_direction(
                &mut local,
                frames,
                opts.frame_bytes,
                true,
                opts.progress,
                epoch,
            );
            let r = w.and_then(|w| {
                run_direction(
                    &mut local,
                    frames,
                    opts.frame_bytes,
                    false,
                    opts.progress,
                    epoch,
                )
                .map(|r| (w, r))
            });
            let _ = std::fs::remove_file(&path);
            let (w, r) = r.with_context(|| format!("baseline {name}"))?;
            baselines.push((name, w, r));
        }
    }
    let stalls = witness.map(StallWitness::finish);
    if let Some(st) = &stalls {
        write.mark_stalls(&st.list);
        read.mark_stalls(&st.list);
        for (_, w, r) in &mut baselines {
            w.mark_stalls(&st.list);
            r.mark_stalls(&st.list);
        }
    }
    let report = AjaReport {
        frame_bytes: opts.frame_bytes,
        client: how,
        write,
        read,
        baselines,
        stalls,
        file_sync_writes: file_syncs.load(Ordering::Relaxed),
    };
    write_csv(&report, &opts.csv)?;
    // The figures are in the summary and the CSV: a graph that cannot be
    // drawn (no font on this machine) does not fail the run.
    if let Err(e) = graph::write(&report, opts.target_mbps, &opts.svg) {
        tracing::warn!(error = %format!("{e:#}"), "aja: no graph drawn");
    }
    Ok(report)
}

/// The budget of one frame at `mbps` MB/s.
pub fn budget_at_mbps(frame_bytes: u64, mbps: f64) -> Duration {
    Duration::from_secs_f64(frame_bytes as f64 / (mbps * 1e6))
}

/// The human-readable summary.
pub fn summary(r: &AjaReport, target_mbps: Option<f64>) -> String {
    let mut s = String::new();
    let target = target_mbps.unwrap_or(600.0);
    let budget = budget_at_mbps(r.frame_bytes, target);
    let _ = writeln!(
        s,
        "frame {} bytes, {} frames ({:.2} GiB), {}",
        r.frame_bytes,
        r.write.frames,
        r.write.bytes as f64 / (1u64 << 30) as f64,
        r.client
    );
    if r.file_sync_writes > 0 {
        let _ = writeln!(
            s,
            "{} WRITEs FILE_SYNC ({:.1} a frame)",
            r.file_sync_writes,
            r.file_sync_writes as f64 / r.write.frames.max(1) as f64
        );
    }
    for (name, d) in [("write", &r.write), ("read", &r.read)] {
        let _ =
            writeln!(
            s,
            "{name:<5} {:>8.1} MB/s sustained  frame p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms{}",
            d.mbps(),
            d.percentile_ms(0.5),
            d.percentile_ms(0.99),
            d.max_ms(),
            if d.flush > Duration::ZERO {
                format!("  (final COMMIT {:.1} ms included)", d.flush.as_secs_f64() * 1e3)
            } else {
                String::new()
            }
        );
        let mut over = String::new();
        for fps in FRAME_RATES {
            let _ = write!(
                over,
                " {fps:.0}fps:{}",
                d.over_budget(Duration::from_secs_f64(1.0 / fps))
            );
        }
        let _ = writeln!(
            s,
            "      frames over budget:{over}  {target:.0}MB/s ({:.2} ms): {}",
            budget.as_secs_f64() * 1e3,
            d.over_budget(budget)
        );
        if r.stalls.is_some() {
            let (n, p99, over) = d.unstalled(budget);
            let _ = writeln!(
                s,
                "      {} frames overlapped a machine stall; the other {n}: p99 {p99:.2} ms, {over} over {:.2} ms",
                d.times_us.len() - n,
                budget.as_secs_f64() * 1e3,
            );
        }
    }
    if let Some(st) = &r.stalls {
        let total: Duration = st.list.iter().map(|s| s.len).sum();
        let max = st.list.iter().map(|s| s.len).max().unwrap_or_default();
        let _ = writeln!(
            s,
            "machine stalls: {} times a {}1 ms ticker could not run for >= {} ms ({:.0} ms in all, max {:.1} ms){}",
            st.list.len(),
            if st.realtime { "real-time " } else { "" },
            stalls::STALL.as_millis(),
            total.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            if st.realtime {
                ": the machine itself did not run (on a VM, its host)"
            } else {
                " (normal priority: includes the machine's own CPU contention)"
            }
        );
    }
    for (name, w, rd) in &r.baselines {
        let _ = writeln!(
            s,
            "same-run baseline {name}: write {:.1} MB/s (p99 {:.2} ms), read {:.1} MB/s; NFS/baseline: write x{:.2}, read x{:.2}",
            w.mbps(),
            w.percentile_ms(0.99),
            rd.mbps(),
            r.write.mbps() / w.mbps(),
            r.read.mbps() / rd.mbps()
        );
    }
    s
}

fn write_csv(r: &AjaReport, path: &Path) -> anyhow::Result<()> {
    let mut out = String::from("frame,write_ms,read_ms,write_stalled_ms,read_stalled_ms\n");
    let ms = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0) as f64 / 1000.0;
    for i in 0..r.write.times_us.len() {
        let _ = writeln!(
            out,
            "{i},{:.3},{:.3},{:.3},{:.3}",
            ms(&r.write.times_us, i),
            ms(&r.read.times_us, i),
            ms(&r.write.stalled_us, i),
            ms(&r.read.stalled_us, i)
        );
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Parses sizes like "16GiB", "5890000", "1.5G", "64M".
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().with_context(|| format!("bad size {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1048576.0,
        "mb" => 1e6,
        "g" | "gib" => 1073741824.0,
        "gb" => 1e9,
        "t" | "tib" => 1099511627776.0,
        other => bail!("unknown size unit {other:?} in {s:?}"),
    };
    Ok((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_budgets() {
        assert_eq!(parse_size("16GiB").unwrap(), 16 << 30);
        assert_eq!(parse_size("5890000").unwrap(), 5_890_000);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert!(parse_size("12 parsecs").is_err());
        let b = budget_at_mbps(5_890_000, 600.0);
        assert!((b.as_secs_f64() * 1e3 - 9.8166).abs() < 0.01);
    }

    #[test]
    fn a_small_run_against_a_local_folder_writes_csv_and_graphs() {
        let dir = tempfile::tempdir().unwrap();
        let opts = AjaOptions {
            frame_bytes: 100_000,
            file_bytes: 2_000_000,
            target: Target::Mount(dir.path().to_path_buf()),
            target_mbps: None,
            csv: dir.path().join("f.csv"),
            svg: dir.path().join("f.svg"),
            chunk: 1 << 20,
            inflight: 4,
            progress: false,
            baseline: Some(dir.path().to_path_buf()),
            lend_payloads: true,
            mac_uncached: false,
        };
        let r = run(&opts).unwrap();
        assert_eq!((r.write.frames, r.read.frames), (20, 20));
        assert_eq!(r.baselines.len(), 2);
        assert!(r
            .baselines
            .iter()
            .all(|(_, w, rd)| w.frames == 20 && rd.frames == 20));
        assert_eq!(r.write.times_us.len(), 20);
        let csv = std::fs::read_to_string(&opts.csv).unwrap();
        assert_eq!(csv.lines().count(), 21);
        // The graph (its content is checked in `graph`'s own tests).
        assert!(std::fs::read_to_string(&opts.svg)
            .unwrap()
            .contains("<polyline"));
        assert!(opts.svg.with_extension("png").exists());
        let text = summary(&r, Some(600.0));
        assert!(text.contains("frames over budget"), "{text}");
        assert!(text.contains("a volume the OS mounted"), "{text}");
        assert!(
            text.contains("same-run baseline local pwrite+fdatasync"),
            "{text}"
        );
    }
}
