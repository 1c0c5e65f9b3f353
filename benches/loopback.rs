//! End-to-end WRITE throughput over loopback, with same-run baselines: the
//! same bytes `pwrite`n locally to the same folder, and sent over a raw
//! loopback TCP socket. Prints min/median/max MB/s of each and the ratios.
//!
//! Storage is on the real disk (under target/), the server in-process.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use markbase_nfs::config::Config;
use markbase_nfs::tools::client::{
    pipelined_reads, pipelined_writes, Create, Nfs4Client, WriteStream,
};

#[path = "support/file_sink.rs"]
mod file_sink;
#[path = "support/server.rs"]
mod server;
use file_sink::{send_round, FileSink, Receive};
use server::start_server;

const TOTAL: u64 = 256 << 20;
const CHUNK: usize = 1 << 20;
const INFLIGHT: usize = 16;

type Samples = Arc<Mutex<Vec<f64>>>;

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// The samples sorted, for min / median / max.
fn sorted(s: &Samples) -> Vec<f64> {
    let mut v = s.lock().unwrap().clone();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

fn summary(name: &str, s: &Samples) -> f64 {
    let v = sorted(s);
    if v.is_empty() {
        return 0.0;
    }
    let med = v[v.len() / 2];
    println!(
        "{name:<34} min {:>8.1}  median {:>8.1}  max {:>8.1} MB/s  ({} runs)",
        v[0],
        med,
        v[v.len() - 1],
        v.len()
    );
    med
}

/// One ceiling receiver (see `file_sink`) and its per-round figures.
struct SinkRun {
    how: Receive,
    conn: TcpStream,
    mbps: Samples,
    /// Against the round's local pwrite.
    vs_local: Samples,
    /// The round's NFS stream against this receiver.
    stream_vs: Samples,
    cpu_ms_per_gib: Samples,
}

/// CPU time (user + system, all threads) this process has used.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |v: libc::timeval| Duration::new(v.tv_sec as u64, v.tv_usec as u32 * 1000);
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Reads the content file of the root's `name` once, so that the server's
/// READs of it find it in the page cache.
fn warm_page_cache(nfs: &markbase_nfs::nfs4::Nfs4Server, name: &str) {
    let catalog = nfs.catalog();
    let node = catalog
        .lookup(&catalog.root().id, name)
        .unwrap()
        .unwrap_or_else(|| panic!("{name} is not in the catalog"));
    let path = node.meta().content.clone().expect("a content file");
    let mut file = std::fs::File::open(&path).unwrap();
    let read = std::io::copy(&mut file, &mut std::io::sink()).unwrap();
    assert_eq!(read, TOTAL, "{} holds {read} bytes", path.display());
}

/// Streams TOTAL bytes into a new file; (stream time, stream + COMMIT
/// time, CPU used by the stream).
fn nfs_stream(
    client: &mut Nfs4Client,
    root: &[u8],
    name: &str,
    chunk: usize,
    inflight: usize,
    commit: bool,
    lend: bool,
) -> (Duration, Duration, Duration) {
    let f = client
        .open(root, name, Create::Unchecked { mode: 0o644 }, 3)
        .unwrap();
    let mut stream = WriteStream::new(&client.rpc, &f, chunk, 0);
    if lend {
        assert!(stream.lend_payload(), "no pipe for the lending client");
    }
    let cpu = cpu_time();
    let t = Instant::now();
    stream.write(&mut client.rpc, 0, TOTAL, inflight).unwrap();
    let streamed = t.elapsed();
    let cpu = cpu_time() - cpu;
    if commit {
        client.commit(&f.fh).unwrap();
    }
    let committed = t.elapsed();
    client.close(&f).unwrap();
    // Like the local baseline, do not let files pile up.
    client.remove(root, name).unwrap();
    (streamed, committed, cpu)
}

fn ratio(name: &str, s: &Samples) {
    let v = sorted(s);
    if let (Some(lo), Some(hi)) = (v.first(), v.last()) {
        println!(
            "{name:<42} min {lo:.2}  median {:.2}  max {hi:.2}  ({} runs)",
            v[v.len() / 2],
            v.len()
        );
    }
}

fn bench(c: &mut Criterion) {
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("loopback-bench");
    let _ = std::fs::remove_dir_all(&base);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The server as configured (WRITE payloads spliced on Linux), and the
    // same server receiving payloads by copying them, for comparison.
    let (addr, nfs) = start_server(&rt, &base.join("spliced"), |_| {});
    let (copy_addr, copy_nfs) = start_server(&rt, &base.join("copied"), |cfg| {
        cfg.network.splice_writes = false
    });

    let nfs_stream_mbps: Samples = Default::default();
    let nfs_commit: Samples = Default::default();
    let copied_stream: Samples = Default::default();
    let local: Samples = Default::default();
    let local_sync: Samples = Default::default();
    let ratio_local: Samples = Default::default();
    let ratio_sync: Samples = Default::default();
    let ratio_copied: Samples = Default::default();
    let cpu_nfs: Samples = Default::default();
    let cpu_copied: Samples = Default::default();
    let cpu_local: Samples = Default::default();
    let tcp: Samples = Default::default();
    // Linux: the same stream from a client that lends its pages instead of
    // copying them (vmsplice), i.e. with the client's copy off these CPUs.
    let lent_stream: Samples = Default::default();
    let ratio_lent: Samples = Default::default();
    let cpu_lent: Samples = Default::default();
    let lending = cfg!(target_os = "linux");
    // The ceiling: the same bytes over loopback TCP into a file, no
    // protocol (receiver copying, and on Linux splicing).
    let sink_kinds: Vec<Receive> = if cfg!(target_os = "linux") {
        vec![Receive::Copy, Receive::Splice]
    } else {
        vec![Receive::Copy]
    };
    let mut sinks: Vec<SinkRun> = sink_kinds
        .into_iter()
        .map(|how| {
            let dir = base.join(format!("sink-{how:?}").to_lowercase());
            SinkRun {
                how,
                conn: FileSink::start(dir, TOTAL, CHUNK, how).connect(),
                mbps: Samples::default(),
                vs_local: Samples::default(),
                stream_vs: Samples::default(),
                cpu_ms_per_gib: Samples::default(),
            }
        })
        .collect();

    let mut g = c.benchmark_group("loopback");
    g.throughput(Throughput::Bytes(TOTAL));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(8));

    let mut client = Nfs4Client::connect(addr, "bench").unwrap();
    let root = client.lookup("").unwrap();
    let mut copy_client = Nfs4Client::connect(copy_addr, "bench-copy").unwrap();
    let copy_root = copy_client.lookup("").unwrap();
    let chunk = vec![0xa5u8; CHUNK];
    let cpu_ms_per_gib =
        |cpu: Duration| cpu.as_secs_f64() * 1e3 * (1u64 << 30) as f64 / TOTAL as f64;
    let mut n = 0;
    // Each run: the NFS stream (+ COMMIT), then the same bytes pwritten
    // locally (+ fdatasync), then the NFS stream into the copying server —
    // back to back, so each ratio compares runs made seconds apart on this
    // noisy machine.
    g.bench_function("write_1MiB_x16_then_commit", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let name = format!("w{n}.bin");
                let (streamed, committed, cpu) =
                    nfs_stream(&mut client, &root, &name, CHUNK, INFLIGHT, true, false);
                total += streamed;

                let p = base.join(format!("local{n}.bin"));
                let f = std::fs::File::create(&p).unwrap();
                let lcpu = cpu_time();
                let t = Instant::now();
                for k in 0..TOTAL / CHUNK as u64 {
                    f.write_all_at(&chunk, k * CHUNK as u64).unwrap();
                }
                let written = t.elapsed();
                let lcpu = cpu_time() - lcpu;
                f.sync_data().unwrap();
                let synced = t.elapsed();
                drop(f);
                let _ = std::fs::remove_file(&p);
                let (local_mbps, stream_mbps) = (mbps(TOTAL, written), mbps(TOTAL, streamed));
                for sink in sinks.iter_mut() {
                    let used = cpu_time();
                    let r = mbps(TOTAL, send_round(&mut sink.conn, &chunk, TOTAL));
                    let cpu = cpu_ms_per_gib(cpu_time() - used);
                    sink.cpu_ms_per_gib.lock().unwrap().push(cpu);
                    sink.mbps.lock().unwrap().push(r);
                    sink.vs_local.lock().unwrap().push(r / local_mbps);
                    sink.stream_vs.lock().unwrap().push(stream_mbps / r);
                }

                let (copied, _, ccpu) = nfs_stream(
                    &mut copy_client,
                    &copy_root,
                    &name,
                    CHUNK,
                    INFLIGHT,
                    false,
                    false,
                );
                let lent = lending
                    .then(|| nfs_stream(&mut client, &root, &name, CHUNK, INFLIGHT, false, true));

                let (s, sc, l, ls, cp) = (
                    mbps(TOTAL, streamed),
                    mbps(TOTAL, committed),
                    mbps(TOTAL, written),
                    mbps(TOTAL, synced),
                    mbps(TOTAL, copied),
                );
                nfs_stream_mbps.lock().unwrap().push(s);
                nfs_commit.lock().unwrap().push(sc);
                local.lock().unwrap().push(l);
                local_sync.lock().unwrap().push(ls);
                copied_stream.lock().unwrap().push(cp);
                ratio_local.lock().unwrap().push(s / l);
                ratio_sync.lock().unwrap().push(sc / ls);
                ratio_copied.lock().unwrap().push(s / cp);
                cpu_nfs.lock().unwrap().push(cpu_ms_per_gib(cpu));
                cpu_copied.lock().unwrap().push(cpu_ms_per_gib(ccpu));
                cpu_local.lock().unwrap().push(cpu_ms_per_gib(lcpu));
                if let Some((lent, _, lcpu)) = lent {
                    let lm = mbps(TOTAL, lent);
                    lent_stream.lock().unwrap().push(lm);
                    ratio_lent.lock().unwrap().push(lm / l);
                    cpu_lent.lock().unwrap().push(cpu_ms_per_gib(lcpu));
                }
            }
            total
        })
    });

    // Pacing (storage.write_behind_backlog) holds WRITEs back once the disk
    // falls behind; the stream figures above include that time.
    let paced = nfs.files().paced();
    let skipped = nfs.files().skipped_windows();
    let n_streams = n * (1 + lending as usize);

    // Other shapes: smaller WRITEs/READs and fewer in flight.
    let shapes: [(usize, usize); 6] = [
        (1 << 20, 4),
        (1 << 20, 1),
        (256 << 10, 16),
        (256 << 10, 4),
        (64 << 10, 16),
        (64 << 10, 4),
    ];
    let mut shape_writes: Vec<(String, Samples)> = Vec::new();
    for (size, inflight) in shapes {
        let name = format!("write_{}KiB_x{inflight}", size >> 10);
        let samples: Samples = Default::default();
        let s2 = samples.clone();
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let f = client
                        .open(
                            &root,
                            &format!("w{n}.bin"),
                            Create::Unchecked { mode: 0o644 },
                            3,
                        )
                        .unwrap();
                    let t = Instant::now();
                    pipelined_writes(&mut client.rpc, &f, TOTAL, size, inflight, 0).unwrap();
                    let d = t.elapsed();
                    client.close(&f).unwrap();
                    client.remove(&root, &format!("w{n}.bin")).unwrap();
                    s2.lock().unwrap().push(mbps(TOTAL, d));
                    total += d;
                }
                total
            })
        });
        shape_writes.push((name, samples));
    }

    // Reads with the server's page cache warm. The file's WRITEs went to
    // disk directly (storage.direct_writes) and a cold READ would too, so
    // the content file is read once here, locally, into the page cache.
    let f = client
        .open(
            &root,
            "read-source.bin",
            Create::Unchecked { mode: 0o644 },
            3,
        )
        .unwrap();
    pipelined_writes(&mut client.rpc, &f, TOTAL, CHUNK, INFLIGHT, 0).unwrap();
    client.commit(&f.fh).unwrap();
    warm_page_cache(&nfs, "read-source.bin");
    let mut shape_reads: Vec<(String, Samples)> = Vec::new();
    for (size, inflight) in [(CHUNK, INFLIGHT)].into_iter().chain(shapes) {
        let name = format!("read_{}KiB_x{inflight}", size >> 10);
        let samples: Samples = Default::default();
        let s2 = samples.clone();
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let got =
                        pipelined_reads(&mut client.rpc, &f, 0, TOTAL, size, inflight).unwrap();
                    assert_eq!(got, TOTAL);
                    let d = t.elapsed();
                    s2.lock().unwrap().push(mbps(TOTAL, d));
                    total += d;
                }
                total
            })
        });
        shape_reads.push((name, samples));
    }
    client.close(&f).unwrap();

    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in sink.incoming() {
            let Ok(mut s) = s else { break };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                let mut got = 0u64;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => got += k as u64,
                    }
                    if got >= TOTAL {
                        let _ = s.write_all(b"k");
                        got = 0;
                    }
                }
            });
        }
    });
    let mut raw = TcpStream::connect(sink_addr).unwrap();
    raw.set_nodelay(true).unwrap();
    g.bench_function("baseline_tcp_loopback", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                for _ in 0..TOTAL / CHUNK as u64 {
                    raw.write_all(&chunk).unwrap();
                }
                let mut ack = [0u8; 1];
                raw.read_exact(&mut ack).unwrap();
                let d = t.elapsed();
                tcp.lock().unwrap().push(mbps(TOTAL, d));
                total += d;
            }
            total
        })
    });
    g.finish();

    println!(
        "\n== WRITE over loopback: {} MiB per run, 1 MiB WRITEs, {INFLIGHT} in flight ==",
        TOTAL >> 20
    );
    let s = summary("NFS UNSTABLE stream", &nfs_stream_mbps);
    let sc = summary("NFS stream + COMMIT", &nfs_commit);
    let l = summary("local pwrite (page cache)", &local);
    summary("local pwrite + fdatasync", &local_sync);
    summary("NFS stream, payloads copied", &copied_stream);
    summary("NFS stream, client lends pages", &lent_stream);
    let t = summary("raw TCP loopback", &tcp);
    for sink in &sinks {
        summary(
            &format!("TCP into a file ({})", sink.how.label()),
            &sink.mbps,
        );
    }
    println!("same-run ratios (each run against the baselines measured right after it):");
    ratio("  stream / local pwrite", &ratio_local);
    ratio("  stream+COMMIT / local pwrite+fdatasync", &ratio_sync);
    ratio("  stream spliced / stream copied", &ratio_copied);
    ratio("  stream, client lends pages / local pwrite", &ratio_lent);
    for sink in &sinks {
        let how = sink.how.label();
        ratio(
            &format!("  TCP into a file, {how} / local pwrite"),
            &sink.vs_local,
        );
        ratio(
            &format!("  stream / TCP into a file, {how}"),
            &sink.stream_vs,
        );
    }
    println!("CPU per GiB written (all threads: client, server, kernel work they do):");
    let sink_cpu = sinks.iter().map(|sink| {
        let name = format!("  TCP into a file ({})", sink.how.label());
        (name, &sink.cpu_ms_per_gib)
    });
    for (name, v) in [
        ("  NFS stream", &cpu_nfs),
        ("  NFS stream, payloads copied", &cpu_copied),
        ("  NFS stream, client lends pages", &cpu_lent),
        ("  local pwrite", &cpu_local),
    ]
    .map(|(name, v)| (name.to_string(), v))
    .into_iter()
    .chain(sink_cpu)
    {
        let v = sorted(v);
        if let (Some(lo), Some(hi)) = (v.first(), v.last()) {
            println!(
                "{name:<34} min {lo:>8.0}  median {:>8.0}  max {hi:>8.0} ms",
                v[v.len() / 2]
            );
        }
    }
    if t > 0.0 {
        println!("stream / raw TCP (medians) {:.2}", s / t);
    }
    println!(
        "WRITEs held back to the disk's pace in the 1 MiB x16 streams: {:.0} ms in all, {:.1} ms per stream",
        paced.as_secs_f64() * 1e3,
        paced.as_secs_f64() * 1e3 / n_streams.max(1) as f64
    );
    println!(
        "write-behind windows dropped because their file was removed first: {skipped} ({:.0} MiB)",
        (skipped * Config::default().storage.write_behind) as f64 / (1u64 << 20) as f64
    );
    println!(
        "600 MB/s target: stream {} ({s:.0} MB/s), stream+COMMIT {} ({sc:.0} MB/s)",
        if s >= 600.0 { "MET" } else { "NOT met" },
        if sc >= 600.0 { "MET" } else { "NOT met" }
    );
    println!("\n== other shapes (median ratio to local pwrite / raw TCP) ==");
    // (A shape left out by a bench filter has no samples.)
    for (name, samples) in shape_writes.iter().chain(&shape_reads) {
        let m = summary(name, samples);
        if m == 0.0 {
            continue;
        }
        println!(
            "{:<34} x{:.2} of local pwrite, x{:.2} of raw TCP",
            "",
            m / l,
            m / t
        );
    }
    nfs.catalog().shutdown();
    copy_nfs.catalog().shutdown();
    let _ = std::fs::remove_dir_all(&base);
}

criterion_group!(benches, bench);
criterion_main!(benches);
