//! The pool's tests: direct and buffered READs and WRITEs on the real
//! disk, write-behind, pacing, read-ahead, spare files.

use super::*;
use super::{read_ahead::*, write_behind::*};
use std::io::Write;

/// Cold data goes disk → aligned buffer, byte-exact, short at end of
/// file; cached data, unaligned offsets and small READs go through the
/// page cache. On the real disk (target/), not /tmp: a tmpfs keeps its
/// pages in the cache whatever it is told.
#[cfg(target_os = "linux")]
#[test]
fn cold_reads_go_direct_and_cached_reads_through_the_cache() {
    if !direct_reads_supported() {
        eprintln!("skipped: no cachestat before Linux 6.5, so no direct reads");
        return;
    }
    let scratch = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&scratch).unwrap();
    let dir = tempfile::tempdir_in(&scratch).unwrap();
    let p = dir.path().join("master.mov");
    let len = (3 << 20) + 1000;
    let want: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    {
        let mut f = File::create(&p).unwrap();
        f.write_all(&want).unwrap();
        f.sync_data().unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: posix_fadvise only reads its integer arguments.
        let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0, "could not drop the file from the page cache");
    }
    let pool = FilePool::new(4, WriteBehind::OFF, ReadAhead::OFF).with_direct_reads(true);
    let f = pool.get(9, &p).unwrap();
    let mb = 1 << 20;
    let (data, eof) = pool.read_at(&f, 0, mb).unwrap();
    assert!(data[..] == want[..mb] && !eof, "first MiB differs");
    assert_eq!(
        pool.direct_read(),
        1,
        "a cold aligned MiB went through the cache"
    );
    // The last block is partial: the READ is short, at end of file.
    let (data, eof) = pool.read_at(&f, 3 << 20, mb).unwrap();
    assert!(data[..] == want[3 << 20..] && eof, "tail differs");
    assert_eq!(
        pool.direct_read(),
        2,
        "the cold tail went through the cache"
    );
    // Unaligned, or small: through the cache.
    let (data, _) = pool.read_at(&f, mb as u64 + 1, 200 << 10).unwrap();
    assert!(
        data[..] == want[mb + 1..mb + 1 + (200 << 10)],
        "unaligned READ differs"
    );
    let (data, _) = pool.read_at(&f, 2 << 20, 64 << 10).unwrap();
    assert!(
        data[..] == want[2 << 20..(2 << 20) + (64 << 10)],
        "small READ differs"
    );
    assert_eq!(
        pool.direct_read(),
        2,
        "an unaligned or small READ went direct"
    );
    // Cached (here: dirty, just written) data is read through the
    // cache, so it reads what was written.
    let new = vec![0xa5u8; mb];
    pool.write_at(&f, 2 << 20, &new).unwrap();
    let (data, _) = pool.read_at(&f, 2 << 20, mb).unwrap();
    assert!(data[..] == new[..], "a READ missed the WRITE before it");
    assert_eq!(pool.direct_read(), 2, "cached data was read direct");
}

#[test]
fn a_removed_files_windows_are_dropped_and_its_last_reference_handed_to_the_closer() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::File::create(&p).unwrap();
    let pool = FilePool::new(4, WriteBehind::OFF, ReadAhead::OFF);
    let f = pool.get(3, &p).unwrap();
    pool.write_at(&f, 0, &[7u8; 8192]).unwrap();
    let (closer, closing) = crossbeam_channel::bounded(4);
    let mut worker = WriteBehindWorker {
        pacer: Arc::new(Pacer::default()),
        skipped: Arc::new(AtomicU64::new(0)),
        closer: Some(closer),
        last_done: None,
    };
    let window = |file: &Arc<PooledFile>, start: u64| FlushJob {
        file: file.clone(),
        start,
        window: 4096,
        retire: start.checked_sub(4096),
        queued: Instant::now(),
    };
    // A live file's window goes to disk; the pool still holds the file.
    assert!(worker.run(window(&f, 0)));
    assert!(closing.is_empty());
    // Removed: the next window (queued while the first was under way,
    // so it would count as a disk-rate sample) is dropped, unmeasured.
    let next = window(&f, 4096);
    pool.forget(3);
    let last = Arc::downgrade(&f);
    drop(f);
    assert!(!worker.run(next));
    assert_eq!(worker.skipped.load(Ordering::Relaxed), 1);
    assert_eq!(worker.pacer.present_rate.load(Ordering::Relaxed), 0);
    // The job held the last reference: the closer has it now.
    let Ok(Closing::Pooled(handed)) = closing.try_recv() else {
        panic!("last reference not handed over");
    };
    assert!(handed.removed.load(Ordering::Relaxed));
    drop(handed);
    assert!(
        last.upgrade().is_none(),
        "closed once the closer dropped it"
    );
}

#[test]
fn removed_content_loses_its_name_at_once_and_its_descriptor_on_the_closer() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FilePool::new(4, WriteBehind::OFF, ReadAhead::OFF);
    // One file in the pool, one not: both names go at once.
    let pooled = dir.path().join("pooled");
    std::fs::write(&pooled, b"frames").unwrap();
    // This reference stands for an RPC still using the file.
    let f = pool.get(1, &pooled).unwrap();
    let last = Arc::downgrade(&f);
    pool.remove_content(1, &pooled).unwrap();
    assert!(!pooled.exists());
    // The closer keeps its reference while the RPC holds one, so the
    // RPC's drop is not the close that frees the blocks.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(Arc::strong_count(&f), 2, "the closer let go first");
    drop(f);
    let other = dir.path().join("other");
    std::fs::write(&other, b"frames").unwrap();
    pool.remove_content(2, &other).unwrap();
    assert!(!other.exists());
    // The pooled descriptor is closed by the closer thread, soon.
    let t = Instant::now();
    while last.upgrade().is_some() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "descriptor never closed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Removing what is gone already says so, and the pool goes on.
    let gone = pool.remove_content(2, &other).unwrap_err();
    assert_eq!(gone.kind(), io::ErrorKind::NotFound);
}

/// An aligned buffer holding `len` bytes of `byte`.
#[cfg(target_os = "linux")]
fn aligned_with(pool: &FilePool, byte: u8, len: usize) -> AlignedBuf {
    let mut buf = pool.aligned.take();
    buf.as_mut()[..len].fill(byte);
    buf
}

/// Direct WRITEs answered before they reach the disk: the WRITE
/// returns while the disk is held up (here: the file's turn, taken by
/// the test, which the direct-writer needs), and a READ or a buffered
/// WRITE of those bytes, a size change and COMMIT wait for them —
/// each sees the payloads in the order they arrived.
#[cfg(target_os = "linux")]
#[test]
fn queued_direct_writes_are_answered_at_once_and_waited_for_by_what_touches_them() {
    let scratch = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&scratch).unwrap();
    let dir = tempfile::tempdir_in(&scratch).unwrap();
    let p = dir.path().join("render.mov");
    File::create(&p).unwrap();
    let pool =
        Arc::new(FilePool::new(4, WriteBehind::OFF, ReadAhead::OFF).with_direct_writes(true, 0, 4));
    let f = pool.get_writable(9, &p).unwrap();
    pool.write_at(&f, 0, &vec![0x11; 3 << 20]).unwrap();
    let mb = 1usize << 20;
    // On a thread of its own, so a call that waited for the disk fails
    // the test instead of hanging it; the receiver hears when it ends.
    type Work = Box<dyn FnOnce(&FilePool, &Arc<PooledFile>) + Send>;
    let run = |work: Work| {
        let (pool, f) = (pool.clone(), f.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            work(&pool, &f);
            tx.send(()).unwrap();
        });
        rx
    };
    let turn = f.serial.lock();
    let queued = run(Box::new(move |pool, f| {
        pool.write_aligned(f, 0, aligned_with(pool, 0x22, mb), mb)
            .unwrap();
        pool.write_aligned(f, mb as u64, aligned_with(pool, 0x33, mb), mb)
            .unwrap();
    }));
    queued
        .recv_timeout(Duration::from_secs(5))
        .expect("direct WRITEs waited for the disk instead of being queued");
    assert_eq!(pool.direct_queued(), 2);
    // Bytes past the queued ones are read at once.
    let (tail, _) = pool.read_at(&f, 2 << 20, 4096).unwrap();
    assert!(tail.iter().all(|&b| b == 0x11));
    let (got_tx, got_rx) = std::sync::mpsc::channel();
    let reader = run(Box::new(move |pool, f| {
        got_tx
            .send(pool.read_at(f, (mb - 4096) as u64, 8192).unwrap().0)
            .unwrap();
    }));
    let overwrite = run(Box::new(move |pool, f| {
        pool.write_at(f, (mb + 4096) as u64, &[0x44; 4096]).unwrap()
    }));
    assert!(
        reader.recv_timeout(Duration::from_millis(100)).is_err(),
        "a READ of queued bytes did not wait for them"
    );
    assert!(
        overwrite.recv_timeout(Duration::from_millis(10)).is_err(),
        "a buffered WRITE over queued bytes did not wait for them"
    );
    drop(turn);
    reader
        .recv_timeout(Duration::from_secs(5))
        .expect("READ never woke");
    overwrite
        .recv_timeout(Duration::from_secs(5))
        .expect("WRITE never woke");
    let got = got_rx.recv().unwrap();
    assert!(
        got[..4096].iter().all(|&b| b == 0x22),
        "first payload not read back"
    );
    assert!(
        got[4096..].iter().all(|&b| b == 0x33),
        "second payload not read back"
    );
    // A size change waits for what is queued: the payload must not
    // grow the file again after it.
    let turn = f.serial.lock();
    let grow = run(Box::new(move |pool, f| {
        pool.write_aligned(f, 4 << 20, aligned_with(pool, 0x55, mb), mb)
            .unwrap()
    }));
    grow.recv_timeout(Duration::from_secs(5)).unwrap();
    let truncate = run(Box::new(move |pool, f| pool.set_len(f, 3 << 20).unwrap()));
    assert!(
        truncate.recv_timeout(Duration::from_millis(50)).is_err(),
        "a size change did not wait for the queue"
    );
    drop(turn);
    truncate
        .recv_timeout(Duration::from_secs(5))
        .expect("size change never woke");
    pool.sync(&f).unwrap();
    assert_eq!(pool.direct_queued(), 0);
    let disk = std::fs::read(&p).unwrap();
    assert_eq!(
        disk.len(),
        3 << 20,
        "a queued payload grew the file after its truncate"
    );
    assert!(disk[..mb].iter().all(|&b| b == 0x22));
    assert!(disk[mb..mb + 4096].iter().all(|&b| b == 0x33));
    assert!(
        disk[mb + 4096..mb + 8192].iter().all(|&b| b == 0x44),
        "the later buffered WRITE lost to the earlier payload"
    );
    assert!(disk[mb + 8192..2 * mb].iter().all(|&b| b == 0x33));
    assert!(disk[2 * mb..].iter().all(|&b| b == 0x11));
}

/// A queued payload that fails on its way to disk (here: a descriptor
/// that cannot write) is reported by the file's next COMMIT, once.
#[cfg(target_os = "linux")]
#[test]
fn a_queued_payload_that_fails_is_reported_by_commit() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    File::create(&p).unwrap();
    let pool = FilePool::new(4, WriteBehind::OFF, ReadAhead::OFF).with_direct_writes(true, 0, 4);
    let read_only = PooledFile {
        file: File::open(&p).unwrap(),
        fileid: 5,
        writable: true,
        behind: AtomicU64::new(0),
        ahead: AtomicU64::new(0),
        serial: parking_lot::Mutex::new(()),
        direct_path: Some(p.clone()),
        direct: std::sync::OnceLock::from(Some(File::open(&p).unwrap())),
        removed: AtomicBool::new(false),
        folder: None,
    };
    let f = Arc::new(read_only);
    pool.write_aligned(&f, 0, aligned_with(&pool, 1, 4096), 4096)
        .expect("the WRITE is answered before the disk is tried");
    let err = pool
        .sync(&f)
        .expect_err("COMMIT did not report the failed payload");
    assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    pool.sync(&f).expect("reported twice");
    assert_eq!(pool.direct_written(), 0);
}

#[test]
fn pool_reuses_descriptors_and_reads_short_at_eof() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::File::create(&p)
        .unwrap()
        .write_all(b"0123456789")
        .unwrap();
    let pool = FilePool::new(4, WriteBehind::OFF, ReadAhead::OFF);
    let f = pool.get(7, &p).unwrap();
    let (data, eof) = pool.read_at(&f, 2, 4).unwrap();
    assert_eq!((&data[..], eof), (&b"2345"[..], false));
    drop(data);
    // The buffer is reused (it still holds "2345"), and a short read
    // shows only the bytes read.
    let f = pool.get(7, &p).unwrap();
    let (data, eof) = pool.read_at(&f, 8, 4).unwrap();
    assert_eq!((&data[..], eof), (&b"89"[..], true));
    assert_eq!(pool.read_buffers.free.lock().len(), 0);
    drop(data);
    assert_eq!(pool.read_buffers.free.lock().len(), 1);
    assert_eq!(pool.opens(), 1);
    assert!(pool.get(8, &dir.path().join("missing")).is_err());
    assert!(volume_stats(dir.path()).unwrap().bytes_total > 0);
}

#[test]
fn write_behind_follows_a_stream_and_restarts_after_a_seek() {
    let wb = WriteBehind {
        window: 8,
        lag: 2,
        backlog: 4,
    };
    // Nothing until a whole window is written.
    assert_eq!(wb.plan(0, 7), None);
    let f = wb.plan(0, 8).unwrap();
    assert_eq!((f.mark, f.start, f.retire), (8, 0, None));
    assert_eq!(wb.plan(8, 15), None);
    // Windows lag*window back are retired.
    let f = wb.plan(16, 24).unwrap();
    assert_eq!((f.mark, f.start, f.retire), (24, 16, Some(0)));
    // A write far ahead restarts at the window that holds its end.
    let f = wb.plan(24, 1000).unwrap();
    assert_eq!((f.mark, f.start, f.retire), (1000, 992, Some(976)));
    // So does a rewrite from the start.
    assert_eq!(wb.plan(1000, 5), None);
    let f = wb.plan(1000, 9).unwrap();
    assert_eq!((f.mark, f.start, f.retire), (8, 0, None));
    assert_eq!(WriteBehind::OFF.plan(0, 1 << 30), None);
}

#[test]
fn pacing_starts_past_the_free_windows_and_slows_as_the_queue_fills() {
    let gb = 1e9;
    let steady = DiskRate {
        present: gb,
        long_run: gb,
    };
    // Unmeasured disk, short queue, or too few windows waiting: no pacing.
    let unmeasured = DiskRate {
        present: 0.0,
        long_run: gb,
    };
    assert_eq!(paced_rate(unmeasured, 40, 64), None);
    assert_eq!(paced_rate(steady, 40, PACE_FREE), None);
    assert_eq!(paced_rate(steady, PACE_FREE, 64), None);
    // Just past the free windows, a little faster than the disk; at the
    // settling point (a quarter of the 60 windows past the free ones)
    // the disk's rate; above it, slower.
    let near = |got: Option<f64>, want: f64| (got.unwrap() - want).abs() < 1.0;
    let eager = 1.0 + PACE_GAIN * (PACE_SETTLE - 1.0 / 60.0);
    assert!(near(paced_rate(steady, PACE_FREE + 1, 64), eager * gb));
    assert!(near(paced_rate(steady, PACE_FREE + 15, 64), gb));
    assert!(near(paced_rate(steady, PACE_FREE + 45, 64), 0.75 * gb));
    // In the top quarter, towards the floor: 8 of the 15 windows left,
    // 8/15 of the rate; full or over: the floor.
    assert!(near(paced_rate(steady, 56, 64), 8.0 / 15.0 * gb));
    assert!(near(paced_rate(steady, 64, 64), PACE_FLOOR * gb));
    assert!(near(paced_rate(steady, 90, 64), PACE_FLOOR * gb));
    // Monotonic in between.
    let rates: Vec<f64> = (5..=64)
        .map(|w| paced_rate(steady, w, 64).unwrap())
        .collect();
    assert!(rates.windows(2).all(|r| r[1] <= r[0]));
    // A slow spell (present rate half the long-run one) with room in the
    // queue: still the long-run rate, so the queue takes the spell in.
    let spell = DiskRate {
        present: 0.5 * gb,
        long_run: gb,
    };
    assert!(near(paced_rate(spell, PACE_FREE + 15, 64), gb));
    // But once it runs out of room, the present rate governs.
    assert!(near(paced_rate(spell, 64, 64), PACE_FLOOR * 0.5 * gb));
    // A disk faster than it was: its present rate.
    let faster = DiskRate {
        present: 2.0 * gb,
        long_run: gb,
    };
    assert!(near(paced_rate(faster, PACE_FREE + 15, 64), 2.0 * gb));
}

#[test]
fn paced_writes_reserve_one_after_another_at_the_rate() {
    let now = Instant::now();
    let mib = 1u64 << 20;
    // 1 MiB at 1 MiB/s: due in a second.
    let (due, wait) = reserve(None, now, mib, mib as f64);
    assert_eq!(wait, Duration::from_secs(1));
    // A second WRITE finishing at the same time queues behind it.
    let (due2, wait2) = reserve(Some(due), now, mib, mib as f64);
    assert_eq!(wait2, Duration::from_secs(2));
    assert_eq!(due2, due + Duration::from_secs(1));
    // A clock left in the past restarts at now: no credit for idle time.
    let later = now + Duration::from_secs(10);
    let (due3, wait3) = reserve(Some(due2), later, mib / 2, mib as f64);
    assert_eq!(wait3, Duration::from_millis(500));
    assert_eq!(due3, later + Duration::from_millis(500));
}

#[test]
fn disk_rate_estimate_follows_samples_smoothly() {
    // The first sample is taken as is.
    let ms = Duration::from_millis;
    assert_eq!(blend_rate(0.0, 800.0, ms(10), RATE_SMOOTHING), 800.0);
    // A 10 ms sample moves a 1 s estimate 1 % of the way.
    let r = blend_rate(1000.0, 500.0, ms(10), Duration::from_secs(1));
    assert!((r - 995.0).abs() < 1e-9, "{r}");
    // A sample as long as the smoothing replaces it.
    assert_eq!(blend_rate(1000.0, 500.0, ms(2000), ms(1000)), 500.0);
    let p = Pacer::default();
    p.disk_drained(8 << 20, Duration::from_millis(8));
    let measured = p.present_rate.load(Ordering::Relaxed) as f64;
    assert!((measured - 1.048576e9).abs() < 1e3, "{measured}");
    // Paced only once windows queue up.
    let now = Instant::now();
    assert_eq!(p.pace(1 << 20, PACE_FREE, 64, now), None);
    // At the settling point: the disk's rate, 1 MiB a millisecond.
    let wait = p.pace(1 << 20, PACE_FREE + 15, 64, now).unwrap();
    assert!(wait > Duration::from_micros(950) && wait < Duration::from_micros(1050));
    assert_eq!(p.paced_ns.load(Ordering::Relaxed), wait.as_nanos() as u64);
}

#[test]
fn pool_writes_stream_through_write_behind() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("stream");
    std::fs::File::create(&p).unwrap();
    let pool = FilePool::new(
        4,
        WriteBehind {
            window: 64 << 10,
            lag: 1,
            backlog: 4,
        },
        ReadAhead {
            window: 64 << 10,
            windows: 2,
        },
    );
    let f = pool.get(1, &p).unwrap();
    let chunk: Vec<u8> = (0..32u32 << 10).map(|i| (i % 251) as u8).collect();
    for k in 0..16u64 {
        pool.write_at(&f, k * chunk.len() as u64, &chunk).unwrap();
    }
    assert_eq!(f.behind.load(Ordering::Relaxed), 512 << 10);
    let back = std::fs::read(&p).unwrap();
    assert_eq!(back.len(), 16 * chunk.len());
    assert!(back.chunks(chunk.len()).all(|c| c == chunk));
    // Reading the stream back keeps two windows requested ahead.
    let (data, _) = pool.read_at(&f, 0, chunk.len()).unwrap();
    assert_eq!(&data[..], &chunk[..]);
    assert_eq!(f.ahead.load(Ordering::Relaxed), 64 << 10);
    let (data, _) = pool.read_at(&f, 32 << 10, chunk.len()).unwrap();
    assert_eq!(&data[..], &chunk[..]);
    assert_eq!(f.ahead.load(Ordering::Relaxed), 128 << 10);
}

#[test]
fn read_ahead_stays_ahead_and_restarts_after_a_seek() {
    let ra = ReadAhead {
        window: 8,
        windows: 2,
    };
    // From the start: windows up to 2 ahead of the reader's end.
    assert_eq!(ra.plan(0, 4), Some(0));
    assert_eq!(ra.plan(8, 4), Some(8));
    assert_eq!(ra.plan(16, 4), Some(16));
    assert_eq!(ra.plan(24, 4), None);
    assert_eq!(ra.plan(24, 12), Some(24));
    // A seek forward or back restarts at the reader's end.
    assert_eq!(ra.plan(24, 1000), Some(1000));
    assert_eq!(ra.plan(1008, 3), Some(3));
    assert_eq!(ReadAhead::OFF.plan(0, 10), None);
}

#[cfg(target_os = "linux")]
#[test]
fn a_removal_after_the_reply_recycles_a_small_file_and_unlinks_a_held_one() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FilePool::new(4, WriteBehind::OFF, ReadAhead::OFF).with_spare_files(dir.path(), 2);
    let small = dir.path().join("small");
    std::fs::write(&small, b"frame").unwrap();
    pool.remove_content_later(1, &small);
    // Held by an RPC: unlinked, never recycled (a write landing after it
    // was emptied would show in another file).
    let held = dir.path().join("held");
    std::fs::write(&held, b"frames").unwrap();
    let f = pool.get(2, &held).unwrap();
    pool.remove_content_later(2, &held);
    let t = Instant::now();
    while small.exists() || held.exists() {
        assert!(t.elapsed() < Duration::from_secs(5), "names never removed");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        pool.new_entries().recycled(),
        1,
        "only the small, unheld file"
    );
    drop(f);
}

#[test]
fn drain_waits_for_the_removals_queued_before_it() {
    // A server that stops leaves no orphan content file behind.
    let dir = tempfile::tempdir().unwrap();
    let pool = FilePool::new(4, WriteBehind::OFF, ReadAhead::OFF);
    let paths: Vec<_> = (0..300u64)
        .map(|n| {
            let p = dir.path().join(format!("frame-{n}"));
            std::fs::write(&p, b"frame").unwrap();
            p
        })
        .collect();
    for (n, p) in paths.iter().enumerate() {
        pool.remove_content_later(n as u64, p);
    }
    pool.drain();
    let left = paths.iter().filter(|p| p.exists()).count();
    assert_eq!(left, 0, "content files still there after the drain");
}
